"""The real NCCL recipe against the stand-in build interface, compiled by the real nvcc.

The stand-in (tests/fixtures/nccl-standin) is not NCCL: it offers NCCL's build interface. The
real upstream source is built by test_nccl_upstream.py when WHEELFACTORY_NCCL_SRC points at a
checkout (never in CI: NCCL's source is not on any registry CI reaches).
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wheelfactory.host.facts import find_cuda_home

from .conftest import FIXTURES, needs_nvcc, run_cli, scratch

pytestmark = [pytest.mark.slow, needs_nvcc]

RELEASE = """
[target]
python = "{py}"
cuda = "13.0"
cuda_arch_list = ["12.1a", "9.0"]
platform = "linux_x86_64"
[components.nccl]
version = "2.29.2-1"
source = {{ path = "{src}" }}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    with scratch(tmp_path_factory, "nccl") as tmp:
        release = tmp / "nccl-only.toml"
        release.write_text(RELEASE.format(py=f"{sys.version_info.major}.{sys.version_info.minor}",
                                          src=FIXTURES / "nccl-standin"))
        common = ["--wheelhouse", str(tmp / "wh"), "--cache-dir", str(tmp / "cache")]
        r = run_cli(*common, "build", "-r", str(release), "nccl", "--env",
                    "nccl:ONLY_FUNCS=AllReduce Sum f32 RING SIMPLE|SendRecv")
        assert r.returncode == 0, r.stderr
        yield tmp, common, release, r


def test_wheel_name_layout_and_version(built):
    tmp, *_ = built
    (wheel,) = (tmp / "wh").glob("*.whl")
    # auditwheel show finds the library consistent with a manylinux policy: the tag says which.
    assert re.fullmatch(r"nvidia_nccl_cu13-2\.29\.2\+wf\.[0-9a-f]{8}-py3-none-manylinux_2_\d+_x86_64\.whl", wheel.name)
    names = zipfile.ZipFile(wheel).namelist()
    assert "nvidia/nccl/lib/libnccl.so.2" in names and "nvidia/nccl/include/nccl.h" in names
    from packaging.specifiers import SpecifierSet
    version = wheel.name.split("-")[1]
    assert version in SpecifierSet("==2.29.2")  # what torch's Requires-Dist asks for


def test_gencode_and_env_reached_make(built):
    tmp, *_ = built
    (log,) = (tmp / "cache" / "logs").glob("nccl-*.log")
    text = log.read_text()
    assert "NVCC_GENCODE=-gencode=arch=compute_121,code=sm_121 -gencode=arch=compute_90,code=sm_90" in text
    assert "stand-in built with ONLY_FUNCS='AllReduce Sum f32 RING SIMPLE|SendRecv'" in text
    assert "make -j" in text and "src.build" in text


def test_installed_wheel_loads_with_ctypes(built, tmp_path):
    tmp, *_ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--isolated", "--no-index",
                    "--find-links", tmp / "wh", "nvidia-nccl-cu13==2.29.2"], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    lib = ctypes.CDLL(str(site / "nvidia" / "nccl" / "lib" / "libnccl.so.2"))
    version = ctypes.c_int()
    assert lib.ncclGetVersion(ctypes.byref(version)) == 0
    assert version.value == 22902
    # The SASS for both requested arches is in the library.
    cuobjdump = Path(find_cuda_home() or "/usr/local/cuda", "bin", "cuobjdump")
    if cuobjdump.exists():
        out = subprocess.run([cuobjdump, "--list-elf", site / "nvidia" / "nccl" / "lib" / "libnccl.so.2"],
                             capture_output=True, text=True, check=True)
        assert "sm_121" in out.stdout and "sm_90" in out.stdout


def test_noop_rebuild_is_cached(built):
    _, common, release, _ = built
    r = run_cli(*common, "build", "-r", str(release), "nccl", "--env",
                "nccl:ONLY_FUNCS=AllReduce Sum f32 RING SIMPLE|SendRecv")
    assert r.returncode == 0 and "cached" in r.stderr and "0 built, 1 cached" in r.stderr


def test_plan_marks_it_cached_and_a_new_env_rebuilds(built):
    _, common, release, _ = built
    r = run_cli(*common, "plan", "-r", str(release), "nccl", "--env",
                "nccl:ONLY_FUNCS=AllReduce Sum f32 RING SIMPLE|SendRecv")
    assert " cached " in r.stdout
    r = run_cli(*common, "plan", "-r", str(release), "nccl")
    assert " build " in r.stdout


def test_wheelhouse_index_serves_pip(built, tmp_path):
    tmp, *_ = built
    url = (tmp / "wh" / "simple").as_uri()
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "-d", tmp_path,
                        "--index-url", url, "nvidia-nccl-cu13==2.29.2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert list(Path(tmp_path).glob("nvidia_nccl_cu13-*.whl"))
