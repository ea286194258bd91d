"""Shared fixtures: the repository's recipes, a fixed fake host, and factories on temp dirs."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from wheelfactory.factory import Factory
from wheelfactory.host import Host

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FATBIN_SOURCES = Path(__file__).resolve().parent / "data" / "fatbin"
CI_RELEASES = Path(__file__).resolve().parent / "releases"

# A Spark-like host, fixed so plan tests do not depend on the machine running them.
SPARK = Host(platform="linux_aarch64", cuda_home="/usr/local/cuda", toolkit="13.1", cpus=20, mem_available_gb=110.0)


@pytest.fixture
def factory(tmp_path: Path) -> Factory:
    return Factory(RECIPES, tmp_path / "wheelhouse", tmp_path / "cache", host_probe=lambda: SPARK)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """Run the real `wheelfactory` entry point in a subprocess."""
    full_env = dict(os.environ) | (env or {})
    return subprocess.run([sys.executable, "-m", "wheelfactory", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
                                reason="needs nvcc (CUDA toolkit)")


@pytest.fixture(scope="session", autouse=True)
def shared_toolkits(tmp_path_factory):
    """One directory of CUDA toolkit wheels and assembled roots for the whole session (~1.3 GB of
    wheels and ~2 GB unpacked per CUDA version), shared by every build's cache directory through
    WHEELFACTORY_TOOLKITS_DIR. Set that variable yourself to keep them across sessions."""
    if os.environ.get("WHEELFACTORY_TOOLKITS_DIR"):
        yield Path(os.environ["WHEELFACTORY_TOOLKITS_DIR"])
        return
    shared = tmp_path_factory.mktemp("toolkits")
    os.environ["WHEELFACTORY_TOOLKITS_DIR"] = str(shared)
    yield shared
    del os.environ["WHEELFACTORY_TOOLKITS_DIR"]


@pytest.fixture(scope="session")
def ci_wheelhouse(tmp_path_factory) -> tuple[Path, Path]:
    """The CI release built and locked (with its -t5 sibling) through the real CLI, once per session.

    WHEELFACTORY_TEST_WHEELHOUSE / WHEELFACTORY_TEST_CACHE reuse an existing wheelhouse and cache
    (the build and lock steps then find everything cached).
    """
    root = tmp_path_factory.mktemp("ci")
    wheelhouse = Path(os.environ.get("WHEELFACTORY_TEST_WHEELHOUSE", root / "wheelhouse"))
    cache = Path(os.environ.get("WHEELFACTORY_TEST_CACHE", root / "cache"))
    common = ["--wheelhouse", str(wheelhouse), "--cache-dir", str(cache)]
    for args in (["build", "-r", str(CI_RELEASES / "ci.toml"), "vllm"],
                 ["lock", "-r", str(CI_RELEASES / "ci.toml")],
                 ["lock", "-r", str(CI_RELEASES / "ci-t5.toml")]):
        r = run_cli(*common, *args)
        assert r.returncode == 0, f"wheelfactory {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return wheelhouse, cache


@functools.cache
def _built_fatbin_dir() -> Path | None:
    # The toolkit's own path first, as cuobjdump.txt was recorded: nvcc's device-link stub (in
    # nvcc_shared.so) embeds where nvcc was started from, so a wrapper elsewhere changes its size.
    default = "/usr/local/cuda/bin/nvcc"
    nvcc = os.environ.get("NVCC") or (default if Path(default).exists() else shutil.which("nvcc"))
    if not nvcc or not Path(nvcc).exists():
        return None
    out = Path(tempfile.mkdtemp(prefix="wf-fatbin-"))
    subprocess.run(["bash", str(FATBIN_SOURCES / "make_fixtures.sh"), str(out)], check=True,
                   env=dict(os.environ) | {"NVCC": nvcc}, capture_output=True)
    return out


def fatbin_fixture(name: str) -> Path:
    """A small ELF file with device code, built from tests/data/fatbin/ by its make_fixtures.sh with
    the real nvcc, once per session (the binaries are generated, never committed); skips without nvcc."""
    built = _built_fatbin_dir()
    if built is None:
        pytest.skip("needs nvcc to build the fatbin fixtures")
    return built / name
