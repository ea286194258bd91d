"""Rust crates for builds that run cargo (vLLM's Rust frontend), vendored at fetch so that
`build --offline` needs neither crates.io nor the git hosts of git dependencies.

    <cache>/sources/cargo/sha256-<sha256 of Cargo.lock>/vendor/    `cargo vendor --locked` output
    <cache>/sources/cargo/sha256-<sha256 of Cargo.lock>/.wf-cargo.json   marker: written last

The vendored tree is named by the lock file's content. A Cargo.lock pins every registry crate by
the sha256 of its .crate file (`checksum`) and every git dependency by commit, and cargo checks
vendored crates against both (and each file against `.cargo-checksum.json`), so the lock file
decides the crates' bytes; the lock file itself is part of the source the build key already
names (an sdist's sha256, a git commit). Nothing about the vendored tree needs keying beyond it.

At build time cargo gets a CARGO_HOME of its own in the work tree whose config.toml replaces
every source the lock names with the vendored directory and sets `net.offline`, so a build
never reaches the network, online or not, and never sees the user's ~/.cargo (credentials,
mirrors, a registry cache that could stand in for a crate).

The pure parts (reading a lock, the config's text, the toolchain pin) are tested without cargo;
`vendor` runs it through a Runner.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..core.errors import BuildError
from ..core.interrupt import file_lock
from ..run.runner import Runner

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
CRATES_IO_SPARSE = "sparse+https://index.crates.io/"
VENDORED = "vendored-sources"
MARKER = ".wf-cargo.json"
RUSTUP_HINT = ("install Rust with rustup (https://rustup.rs: `curl --proto '=https' --tlsv1.2 -sSf "
               "https://sh.rustup.rs | sh`)")


@dataclass(frozen=True)
class LockSummary:
    """What a Cargo.lock asks for: its sha256, and the sources its packages come from."""

    sha256: str
    version: int
    registry_crates: int  # packages from a registry (crates.io), each pinned by checksum
    git_sources: tuple[str, ...]  # distinct `git+URL?query#commit` sources
    registries: tuple[str, ...]  # distinct `registry+URL` / `sparse+URL` sources
    local: int  # workspace members and path dependencies (no source)

    def describe(self) -> str:
        git = f" and {len(self.git_sources)} git dependenc{'y' if len(self.git_sources) == 1 else 'ies'}" \
            if self.git_sources else ""
        return f"{self.registry_crates} crates{git} (Cargo.lock sha256 {self.sha256[:12]})"


def read_lock(data: bytes, where: str = "Cargo.lock") -> LockSummary:
    """The sources a Cargo.lock names; a lock whose registry packages are not all pinned by
    checksum cannot name the crates' bytes, so it is refused."""
    try:
        lock = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BuildError(f"{where}: not a Cargo.lock ({e})") from None
    packages = lock.get("package", [])
    registries, git, unpinned = set(), set(), []
    registry_crates = local = 0
    for p in packages:
        source = p.get("source")
        if source is None:
            local += 1
        elif source.startswith(("registry+", "sparse+")):
            registries.add(source)
            registry_crates += 1
            if not p.get("checksum"):
                unpinned.append(f"{p.get('name')} {p.get('version')}")
        elif source.startswith("git+"):
            if "#" not in source:
                raise BuildError(f"{where}: {p.get('name')} comes from {source}, which names no commit")
            git.add(source)
        else:
            raise BuildError(f"{where}: {p.get('name')} comes from an unknown kind of source {source!r}")
    if unpinned:
        raise BuildError(f"{where}: registry packages without a checksum ({', '.join(unpinned[:5])}"
                         f"{', ...' if len(unpinned) > 5 else ''}): the lock does not name their bytes")
    return LockSummary(hashlib.sha256(data).hexdigest(), int(lock.get("version", 1)), registry_crates,
                       tuple(sorted(git)), tuple(sorted(registries)), local)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for what appears here


def _git_source_table(source: str) -> tuple[str, dict[str, str]]:
    """`git+URL?rev=R#commit` -> ('git+URL?rev=R', {git: URL, rev: R}): the name and the keys cargo
    matches a dependency's `git`/`rev`/`tag`/`branch` against (as `cargo vendor` prints them)."""
    spec = source[len("git+"):].split("#", 1)[0]
    parts = urlsplit(spec)
    url = parts._replace(query="", fragment="").geturl()
    keys = {"git": url}
    for k, v in parse_qsl(parts.query):
        if k in ("rev", "tag", "branch"):
            keys[k] = v
    return "git+" + spec, keys


def config_toml(summary: LockSummary, vendor_dir: Path | str) -> str:
    """A cargo config.toml that replaces every source the lock names with the vendored directory
    and forbids the network."""
    lines = ["# Written by wheelfactory: every crate comes from the vendored directory, nothing from the network.", ""]
    for registry in summary.registries:
        if registry in (CRATES_IO, CRATES_IO_SPARSE):
            lines += ["[source.crates-io]", f'replace-with = "{VENDORED}"', ""]
        else:
            # cargo's `registry` key takes a sparse index with its prefix, a git index without.
            index = registry if registry.startswith("sparse+") else registry.split("+", 1)[1]
            lines += [f"[source.{_toml_str(registry)}]", f"registry = {_toml_str(index)}",
                      f'replace-with = "{VENDORED}"', ""]
    for source in summary.git_sources:
        name, keys = _git_source_table(source)
        lines.append(f"[source.{_toml_str(name)}]")
        lines += [f"{k} = {_toml_str(v)}" for k, v in keys.items()]
        lines += [f'replace-with = "{VENDORED}"', ""]
    lines += [f"[source.{VENDORED}]", f"directory = {_toml_str(str(vendor_dir))}", "",
              "[net]", "offline = true", ""]
    return "\n".join(lines)


def build_env(cargo_home: Path | str, jobs: int) -> dict[str, str]:
    """The runtime settings of a cargo build against vendored crates (not keyed: paths and jobs);
    rustup must not download a toolchain mid-build either."""
    return {"CARGO_HOME": str(cargo_home), "CARGO_NET_OFFLINE": "true", "CARGO_BUILD_JOBS": str(max(1, jobs)),
            "RUSTUP_AUTO_INSTALL": "0"}


# -- the toolchain pin ----------------------------------------------------------------------------

def toolchain_channel(tree: Path) -> str | None:
    """The channel a source tree pins for rustup (rust-toolchain.toml's [toolchain] channel, or
    the legacy one-line rust-toolchain file), or None."""
    toml_file = tree / "rust-toolchain.toml"
    if toml_file.is_file():
        try:
            data = tomllib.loads(toml_file.read_text())
        except tomllib.TOMLDecodeError as e:
            raise BuildError(f"{toml_file}: not valid TOML: {e}") from None
        channel = data.get("toolchain", {}).get("channel")
        return str(channel) if channel else None
    legacy = tree / "rust-toolchain"
    if legacy.is_file():
        text = legacy.read_text().strip()
        return text if text and "\n" not in text and not text.startswith("[") else None
    return None


_VERSION_RE = re.compile(r"\b(?:rustc|cargo) (\d+)\.(\d+)\.(\d+)")


def parse_version(out: str) -> tuple[int, int, int] | None:
    """(1, 95, 0) from `rustc --version` or `cargo --version` output."""
    m = _VERSION_RE.search(out)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def channel_accepts(channel: str, version: tuple[int, int, int]) -> bool:
    """Whether a numbered channel ("1.95" or "1.95.0") names this version; named channels
    (stable, nightly-...) are not version pins."""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", channel)
    if not m:
        return False
    wanted = (int(m[1]), int(m[2])) + ((int(m[3]),) if m[3] is not None else ())
    return version[:len(wanted)] == wanted


def toolchain_name(sysroot: str) -> str:
    """rustup's name of a toolchain from `rustc --print sysroot` (<RUSTUP_HOME>/toolchains/<name>)."""
    return Path(sysroot.strip().splitlines()[-1]).name if sysroot.strip() else ""


def select_toolchain(runner: Runner, tree: Path, outside: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment that makes cargo run in `tree` with the toolchain its rust-toolchain.toml
    pins, without rustup downloading anything: nothing when the pinned toolchain is installed
    under that name; RUSTUP_TOOLCHAIN=<installed toolchain> when the host's default toolchain is
    the pinned version under another name (`stable` at 1.95.0 for a pin of "1.95"); otherwise a
    BuildError naming what to install."""
    channel = toolchain_channel(tree)
    env = dict(env) | {"RUSTUP_AUTO_INSTALL": "0"}
    out = runner.run(["cargo", "--version"], cwd=tree, env=env, capture=True, check=False)
    if parse_version(out) is not None:
        runner.note(f"cargo in the source tree: {out.strip().splitlines()[-1]}")
        return {}
    # The pin (or something else) stops cargo in the tree; what does the host have outside it?
    outside_out = runner.run(["rustc", "--version"], cwd=outside, env=env, capture=True, check=False)
    version = parse_version(outside_out)
    if version is None:
        raise BuildError(f"cargo and rustc do not run here ({(outside_out or out).strip().splitlines()[-1:] or '?'}); "
                         f"the build compiles Rust: {RUSTUP_HINT}"
                         + (f", then `rustup toolchain install {channel}`" if channel else ""))
    if channel is None or not channel_accepts(channel, version):
        shown = ".".join(map(str, version))
        raise BuildError(f"the source pins Rust {channel} (rust-toolchain.toml) and cargo does not run with it "
                         f"({out.strip().splitlines()[-1] if out.strip() else '?'}); the host's default rustc is "
                         f"{shown}. Run `rustup toolchain install {channel}` while online (rustup is not asked "
                         "to download during a build)")
    sysroot = runner.run(["rustc", "--print", "sysroot"], cwd=outside, env=env, capture=True, check=False)
    name = toolchain_name(sysroot)
    if not name:
        raise BuildError(f"cannot tell which rustup toolchain provides rustc {'.'.join(map(str, version))}")
    runner.note(f"the source pins Rust {channel}; the installed toolchain {name} is rustc "
                f"{'.'.join(map(str, version))}: RUSTUP_TOOLCHAIN={name}")
    return {"RUSTUP_TOOLCHAIN": name}


# -- vendoring (fetch) -----------------------------------------------------------------------------

def vendor_root(cache_dir: Path, lock_sha256: str) -> Path:
    return cache_dir / "sources" / "cargo" / f"sha256-{lock_sha256}"


def vendored(cache_dir: Path, lock: Path) -> tuple[LockSummary, Path]:
    """The lock's summary and its vendored crates' directory; a BuildError telling to fetch when
    they are not in the cache."""
    summary = read_lock(lock.read_bytes(), str(lock))
    root = vendor_root(cache_dir, summary.sha256)
    if not (root / MARKER).is_file():
        raise BuildError(f"the crates of {lock.name} ({summary.describe()}) are not vendored in {root.parent}; "
                         "run `wheelfactory fetch --release ...` while online first")
    return summary, root / "vendor"


def vendor(runner: Runner, cache_dir: Path, manifest: Path, lock: Path, *, offline: bool = False,
           env: dict[str, str] | None = None) -> Path:
    """Vendor the crates `lock` names (`cargo vendor --locked`) into the cache, once per lock
    content; returns the vendor directory. Offline, only checks that they are there."""
    summary = read_lock(lock.read_bytes(), str(lock))
    root = vendor_root(cache_dir, summary.sha256)
    if (root / MARKER).is_file():
        return root / "vendor"
    if offline:
        return vendored(cache_dir, lock)[1]  # raises with what to run
    if shutil.which("cargo", path=(env or os.environ).get("PATH")) is None:
        raise BuildError(f"vendoring the crates of {manifest} needs cargo, which is not on PATH: {RUSTUP_HINT}")
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock", on_wait=lambda holder: runner.note(
            f"waiting for another process vendoring {lock} ({holder})")):
        if (root / MARKER).is_file():
            return root / "vendor"
        tmp = Path(tempfile.mkdtemp(prefix=".vendor-", dir=root.parent))
        try:
            # Run outside the source tree: its rust-toolchain.toml must not make rustup pick (or
            # download) a toolchain just to copy crates, and its .cargo/ config does not apply.
            runner.run(["cargo", "vendor", "--locked", "--versioned-dirs", "--manifest-path", manifest,
                        tmp / "vendor"], cwd=tmp, env=(env or {}) | {"RUSTUP_AUTO_INSTALL": "0"}, capture=True)
            (tmp / MARKER).write_text(json.dumps({
                "lock": str(lock.name), "lock_sha256": summary.sha256, "registry_crates": summary.registry_crates,
                "git_sources": list(summary.git_sources)}, indent=2) + "\n")
            if root.exists():  # an incomplete copy (no marker): replaced
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    runner.note(f"vendored {summary.describe()} into {root}")
    return root / "vendor"


def write_config(cargo_home: Path, summary: LockSummary, vendor_dir: Path) -> Path:
    """CARGO_HOME/config.toml for a build against the vendored crates."""
    cargo_home.mkdir(parents=True, exist_ok=True)
    path = cargo_home / "config.toml"
    path.write_text(config_toml(summary, vendor_dir))
    return path
