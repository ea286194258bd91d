"""The CI chain end to end with real upstream sdists: nccl (stand-in) -> torch (adopted CPU
wheel) -> flashinfer (PyPI sdist) -> vllm (PyPI sdist, no kernels); lock; a venv from the lock
with no network; and an offline rebuild inside a network namespace with no network at all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CI_RELEASES, REPO, run_cli

pytestmark = pytest.mark.slow

STACK = {"nvidia-nccl-cu13": "nccl", "torch": "torch", "flashinfer-python": "flashinfer", "vllm": "vllm"}


def no_network_prefix() -> list[str]:
    """`unshare -n` (a network namespace with only loopback, down) where this user may make one."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    pytest.skip("cannot create a network namespace here to prove offline operation")


def test_lock_pins_the_factory_wheels(ci_wheelhouse):
    wheelhouse, _ = ci_wheelhouse
    lock = json.loads((wheelhouse / "locks" / "ci.json").read_text())
    manifest = json.loads((wheelhouse / "manifest.json").read_text())["wheels"]
    by_name = {p["name"]: p for p in lock["packages"]}
    for dist, component in STACK.items():
        p = by_name[dist]
        assert p["component"] == component
        assert manifest[p["filename"]]["sha256"] == p["sha256"]
        assert manifest[p["filename"]]["origin"] in ("built", "adopted")
    assert by_name["transformers"]["version"] == "4.57.6"
    assert by_name["torch"]["origin"] == "adopted"
    txt = (wheelhouse / "locks" / "ci.txt").read_text()
    assert f"torch=={by_name['torch']['version']} --hash=sha256:{by_name['torch']['sha256']}" in txt
    t5 = {p["name"]: p for p in json.loads((wheelhouse / "locks" / "ci-t5.json").read_text())["packages"]}
    assert t5["transformers"]["version"] == "5.0.0"
    assert t5["vllm"]["sha256"] == by_name["vllm"]["sha256"]  # the same built wheel serves both


def test_venv_from_the_lock_offline(ci_wheelhouse, tmp_path):
    wheelhouse, cache = ci_wheelhouse
    venv = tmp_path / "venv"
    r = subprocess.run([*no_network_prefix(), sys.executable, "-m", "wheelfactory", "--wheelhouse", str(wheelhouse),
                        "--cache-dir", str(cache), "venv", str(venv), "-r", str(CI_RELEASES / "ci.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pip check passed" in r.stderr
    out = subprocess.run([venv / "bin" / "python", "-c",
                          "import vllm, flashinfer, torch, transformers as t; "
                          "print(vllm.__version__, flashinfer.__version__, torch.__version__, t.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith("0.14.1") and out[1] == "0.6.2" and out[2] == "2.13.0+cpu" and out[3] == "4.57.6"
    # Every stack package in the venv is byte-for-byte the wheelhouse's (pip verified the lock's
    # hashes); the RECORD of each names the factory's version.
    freeze = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    versions = {p["name"].lower(): p["version"] for p in json.loads(freeze)}
    assert versions["nvidia-nccl-cu13"].startswith("2.29.2+wf.")


def test_plain_pip_and_the_simple_index_work_elsewhere(ci_wheelhouse, tmp_path):
    wheelhouse, _ = ci_wheelhouse
    target = tmp_path / "t"
    r = subprocess.run([*no_network_prefix(), sys.executable, "-m", "pip", "install", "--isolated", "-q",
                        "--target", target, "--index-url", (wheelhouse / "simple").as_uri(), "--no-deps",
                        "flashinfer-python==0.6.2", "nvidia-nccl-cu13==2.29.2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_offline_rebuild_needs_no_network(ci_wheelhouse, tmp_path):
    _, cache = ci_wheelhouse
    fresh = tmp_path / "wh"
    r = subprocess.run([*no_network_prefix(), sys.executable, "-m", "wheelfactory", "--wheelhouse", str(fresh),
                        "--cache-dir", str(cache), "build", "--offline", "-r", str(CI_RELEASES / "ci.toml"), "vllm"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 built, 0 cached" in r.stderr


def test_offline_without_fetched_sources_says_what_to_run(tmp_path):
    r = run_cli("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "empty-cache"), "build",
                "--offline", "-r", str(CI_RELEASES / "ci.toml"), "flashinfer")
    # the host check sees it before any work: not even nccl (a local source) is built
    assert r.returncode == 2, r.stderr
    assert "--offline and not in the cache: flashinfer; run `wheelfactory fetch`" in r.stderr
    assert not list((tmp_path / "wh").glob("*.whl"))


def test_fetch_then_offline_build_in_a_fresh_cache(tmp_path):
    common = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "cache")]
    r = run_cli(*common, "fetch", "-r", str(CI_RELEASES / "ci.toml"), "flashinfer")
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([*no_network_prefix(), sys.executable, "-m", "wheelfactory", *common, "build", "--offline",
                        "-r", str(CI_RELEASES / "ci.toml"), "flashinfer"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list(Path(tmp_path / "wh").glob("flashinfer_python-0.6.2-*.whl"))
