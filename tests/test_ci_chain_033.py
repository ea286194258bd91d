"""The CI chain on the newest release (tests/releases/ci-033.toml): nccl (stand-in) -> torch (adopted
CPU wheel) -> flashinfer 0.7.2.post1 (PyPI sdist) -> vLLM 0.33.0 (PyPI sdist, no kernels, no Rust
frontend: its crates come from crates.io and GitHub, which CI cannot reach); then the same build
offline, from the cache alone, inside a network namespace with no network at all; then the lock of
its runtime closure and a venv from it, offline.

Measured on CI's kind of machine (2 cores): the online build 132-166 s from an empty cache (CUDA
toolkit wheels included), the offline rebuild 93-120 s, lock 64 s (162 packages), the offline venv
41 s; the file about 5 minutes: in the CI tier."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from .conftest import CI_RELEASES, REPO, run_cli, scratch
from .test_ci_chain import no_network_prefix

pytestmark = pytest.mark.slow

RELEASE = str(CI_RELEASES / "ci-033.toml")
TRANSFORMERS = "5.20.2"  # the release's [pins]; vLLM 0.33.0 requires transformers>=5.16.1,<5.21.0


@pytest.fixture(scope="module")
def ci033(tmp_path_factory):
    with scratch(tmp_path_factory, "ci033") as root:  # 2.5 GB of sources and caches
        common = ["--wheelhouse", str(root / "wh"), "--cache-dir", str(root / "cache")]
        r = run_cli(*common, "build", "--release", RELEASE, "vllm", cwd=REPO)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr[-4000:]}"
        yield root, r


def test_vllm_033_builds_from_its_sdist_without_kernels_or_rust(ci033):
    root, r = ci033
    assert "4 built, 0 cached" in r.stderr
    [wheel] = (root / "wh").glob("vllm-0.33.0+empty-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [line for line in zf.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    assert "vllm/vllm-rs" not in names  # rust_frontend = false: left out on purpose, not by a failed cargo
    assert not any(n.endswith(".so") for n in names)  # kernels = false
    assert any("transformers" in line for line in requires)
    [flashinfer] = (root / "wh").glob("flashinfer_python-0.7.2.post1-*.whl")
    assert flashinfer.is_file()


def test_vllm_033_rebuilds_offline_with_no_network(ci033, tmp_path):
    root, _ = ci033
    r = subprocess.run([*no_network_prefix(), sys.executable, "-m", "wheelfactory", "--wheelhouse",
                        str(tmp_path / "wh"), "--cache-dir", str(root / "cache"), "build", "--offline",
                        "--release", RELEASE, "vllm"], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "4 built, 0 cached" in r.stderr
    assert list((tmp_path / "wh").glob("vllm-0.33.0+empty-*.whl"))


def test_vllm_033_locks_and_installs_offline(ci033, tmp_path):
    """The newest release's runtime closure locked (vLLM 0.33.0's own requirements from PyPI, the
    factory's wheels by file), then a venv from the lock with no network at all."""
    root, _ = ci033
    common = ["--wheelhouse", str(root / "wh"), "--cache-dir", str(root / "cache")]
    r = run_cli(*common, "lock", "--release", RELEASE, cwd=REPO)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "(4 from the factory," in r.stderr
    venv = tmp_path / "venv"
    r = subprocess.run([*no_network_prefix(), sys.executable, "-m", "wheelfactory", *common, "venv", str(venv),
                        "--release", RELEASE], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "pip check passed" in r.stderr
    out = subprocess.run([venv / "bin" / "python", "-c", "import vllm, flashinfer, torch, transformers as t; "
                          "print(vllm.__version__, flashinfer.__version__, torch.__version__, t.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0.33.0", "0.7.2.post1", "2.13.0+cpu", TRANSFORMERS], out
