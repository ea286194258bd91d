"""Vendoring with the real cargo, then building offline from the vendored crates alone: a small
workspace with a path crate and a git dependency pinned by commit (served from a local repository,
deleted before the build), and a rust-toolchain.toml pin as vLLM 0.33 has. crates.io itself is not
reachable from CI, so the workspace has no crates.io dependency; the config cargo.py writes
replaces crates.io the same way (tests/test_cargo.py checks its text)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import pytest

from wheelfactory.run.runner import Runner
from wheelfactory.sources import cargo

from .test_ci_chain import no_network_prefix

pytestmark = pytest.mark.slow


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_vendored_crates_build_offline_without_their_sources(tmp_path):
    _need("cargo"), _need("git")
    dep = tmp_path / "wfdep"
    (dep / "src").mkdir(parents=True)
    (dep / "Cargo.toml").write_text('[package]\nname = "wfdep"\nversion = "0.1.0"\nedition = "2021"\n')
    (dep / "src" / "lib.rs").write_text('pub fn greeting() -> &\'static str { "vendored hello" }\n')
    _git("init", "-q", cwd=dep)
    _git("add", ".", cwd=dep)
    _git("commit", "-q", "-m", "one", cwd=dep)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=dep, capture_output=True, text=True,
                            check=True).stdout.strip()

    ws = tmp_path / "ws"
    (ws / "app" / "src").mkdir(parents=True)
    (ws / "util" / "src").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[workspace]\nmembers = ["app", "util"]\nresolver = "2"\n')
    (ws / "rust-toolchain.toml").write_text(f'[toolchain]\nchannel = "{_host_channel()}"\n')
    (ws / "util" / "Cargo.toml").write_text('[package]\nname = "util"\nversion = "0.1.0"\nedition = "2021"\n')
    (ws / "util" / "src" / "lib.rs").write_text("pub fn twice(s: &str) -> String { format!(\"{s} {s}\") }\n")
    (ws / "app" / "Cargo.toml").write_text(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n[dependencies]\n'
        f'util = {{ path = "../util" }}\nwfdep = {{ git = "{dep.as_uri()}", rev = "{commit}" }}\n')
    (ws / "app" / "src" / "main.rs").write_text('fn main() { println!("{}", util::twice(wfdep::greeting())); }\n')
    home = tmp_path / "fetch-home"
    subprocess.run(["cargo", "generate-lockfile", "--manifest-path", ws / "Cargo.toml"], cwd=tmp_path, check=True,
                   capture_output=True, env=_env(home))

    # fetch: vendored into the cache under the lock's sha256, once
    runner = Runner("cargo-test", tmp_path / "vendor.log", base_env=_env(home))
    cache = tmp_path / "cache"
    vendor_dir = cargo.vendor(runner, cache, ws / "Cargo.toml", ws / "Cargo.lock")
    summary = cargo.read_lock((ws / "Cargo.lock").read_bytes())
    assert vendor_dir == cargo.vendor_root(cache, summary.sha256) / "vendor"
    assert (vendor_dir / "wfdep-0.1.0" / "src" / "lib.rs").is_file()
    assert summary.git_sources and summary.local == 2 and summary.registry_crates == 0
    assert cargo.vendor(runner, cache, ws / "Cargo.toml", ws / "Cargo.lock") == vendor_dir  # no second run
    assert (tmp_path / "vendor.log").read_text().count("cargo vendor") == 1

    # build: the git repository and the fetch's cargo home are gone; no network at all
    shutil.rmtree(dep)
    shutil.rmtree(home)
    tree = tmp_path / "work" / "src"
    shutil.copytree(ws, tree)
    cargo_home = tmp_path / "work" / "cargo-home"
    cargo.write_config(cargo_home, *cargo.vendored(cache, tree / "Cargo.lock"))
    env = _env(cargo_home) | cargo.build_env(cargo_home, 2)
    env |= cargo.select_toolchain(Runner("cargo-test", tmp_path / "build.log", base_env=env), tree,
                                  tmp_path / "work", {})
    r = subprocess.run([*no_network_prefix(), "cargo", "build", "--release", "--locked", "-q"], cwd=tree, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = subprocess.run([tree / "target" / "release" / "app"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "vendored hello vendored hello"
    assert tomllib.loads((cargo_home / "config.toml").read_text())["net"] == {"offline": True}


def _host_channel() -> str:
    """The host's rustc as a numbered channel (1.95), as vLLM pins it: installed under another name
    (stable) here, which select_toolchain must find without rustup downloading anything."""
    out = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True, cwd="/").stdout
    major, minor, _ = cargo.parse_version(out)
    return f"{major}.{minor}"


def _env(cargo_home):
    import os
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "RUSTUP_HOME", "LANG", "TMPDIR")}
    return env | {"CARGO_HOME": str(cargo_home), "RUSTUP_AUTO_INSTALL": "0"}
