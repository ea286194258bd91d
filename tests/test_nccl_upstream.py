"""The real NCCL source, outside CI: set WHEELFACTORY_NCCL_SRC to a checkout of NVIDIA/nccl at a
v2.29.2-1 tag (never committed here). Restricted with ONLY_FUNCS so it takes minutes, not tens."""

from __future__ import annotations

import ctypes
import os
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import needs_nvcc, run_cli

SRC = os.environ.get("WHEELFACTORY_NCCL_SRC")
pytestmark = [pytest.mark.slow, pytest.mark.upstream, needs_nvcc,
              pytest.mark.skipif(not SRC, reason="upstream NCCL source absent (set WHEELFACTORY_NCCL_SRC)")]


@pytest.mark.parametrize("arch, sm", [("12.1a", "121"), ("9.0", "90")])
def test_upstream_nccl_wheel(tmp_path, arch, sm):
    release = tmp_path / "r.toml"
    release.write_text(f"""[target]\npython = "{sys.version_info.major}.{sys.version_info.minor}"\ncuda = "13.0"
cuda_arch_list = ["{arch}"]\nplatform = "linux_x86_64"\n[components.nccl]\nversion = "2.29.2-1"\n""")
    r = run_cli("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "build", "-r", str(release),
                "--source-dir", f"nccl={SRC}", "--env", "nccl:ONLY_FUNCS=AllReduce Sum f32 RING SIMPLE|SendRecv",
                timeout=3600)
    assert r.returncode == 0, r.stderr[-4000:]
    (wheel,) = (tmp_path / "wh").glob("*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "x")
    lib = ctypes.CDLL(str(tmp_path / "x" / "nvidia" / "nccl" / "lib" / "libnccl.so.2"))
    v = ctypes.c_int()
    assert lib.ncclGetVersion(ctypes.byref(v)) == 0 and v.value == 22902
    assert Path(tmp_path / "x" / "nvidia" / "nccl" / "include" / "nccl.h").exists()
    assert f"code=sm_{sm}" in next((tmp_path / "c" / "logs").glob("nccl-*.log")).read_text()
