"""Triton compiles a real kernel ahead of time for the DGX Spark (sm_121a) on a machine without a GPU,
with the ptxas of the release's CUDA toolkit wheels, as images and `wheelfactory venv` set it up.

One venv per Triton version, holding that Triton and the release CUDA's nvidia-cuda-nvcc wheel
(both from PyPI, x86_64); `point_triton_at_toolkit` (what `wheelfactory venv` runs) points every
ptxas variable of that Triton at the wheel's ptxas; the check script is the one images run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from wheelfactory.cuda.triton_ptxas import ptxas_knobs
from wheelfactory.lock.venv import PTH_NAME, TRITON_CHECK, point_triton_at_toolkit

from .conftest import CI_RELEASES, RECIPES

pytestmark = pytest.mark.slow

# (release, its Triton): ci.toml adopts torch 2.13.0, whose CUDA wheels require triton==3.7.1 (the
# CI release itself locks no Triton: its torch is the CPU wheel); 0.33.0-t5 adopts triton 3.8.0;
# 0.15.0-t4 builds 3.5.1.
CASES = [(CI_RELEASES / "ci.toml", "3.7.1"), (RECIPES / "releases" / "0.33.0-t5.toml", "3.8.0"),
         (RECIPES / "releases" / "0.15.0-t4.toml", "3.5.1")]


def toolkit_nvcc(release: Path) -> str:
    """The nvidia-cuda-nvcc version of the release's CUDA (cuda_wheels.toml's jit list)."""
    with open(release, "rb") as f:
        data = tomllib.load(f)
    cuda = data.get("target", {}).get("cuda")
    if cuda is None:  # a release that extends another: 0.15.0-t4 on pytorch-2.10.0-cu131
        with open(release.parent / f"{data['extends']}.toml", "rb") as f:
            cuda = tomllib.load(f)["target"]["cuda"]
    with open(RECIPES / "data" / "cuda_wheels.toml", "rb") as f:
        jit = tomllib.load(f)[".".join(cuda.split(".")[:2])]["jit"]
    return next(r.split("==")[1] for r in jit if r.startswith("nvidia-cuda-nvcc=="))


def check(python: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    r = subprocess.run([str(python), str(TRITON_CHECK), "--capability", "121", *args], capture_output=True,
                       text=True, timeout=600, env=env)
    return json.loads(r.stdout.splitlines()[-1]) | {"exit": r.returncode}


@pytest.mark.parametrize(("release", "triton"), CASES, ids=[f"{r.stem}-triton{t}" for r, t in CASES])
def test_triton_compiles_for_sm_121a_with_the_toolkit_ptxas(release: Path, triton: str, tmp_path: Path) -> None:
    nvcc = toolkit_nvcc(release)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--only-binary", ":all:",
                        f"triton=={triton}", f"nvidia-cuda-nvcc=={nvcc}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    ptxas = point_triton_at_toolkit(venv, triton)
    assert ptxas is not None and ptxas.is_file()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}

    result = check(py, "--expect-ptxas", str(ptxas), env=clean)
    assert result["exit"] == 0 and result["ok"], result
    assert result["cubin_sm"] == "sm_121a" and result["ptx_target"] == "sm_121a"
    assert result["cubin_ptxas"] == nvcc  # compiled by the toolkit wheel's ptxas, not Triton's own
    assert set(result["knobs"]) == set(ptxas_knobs(triton))

    # Without the variables (the .pth removed): the bundled ptxas. Triton 3.5.1's (12.8) cannot
    # assemble sm_121a; 3.7.1 and 3.8.0 bring a ptxas-blackwell that can, but not the toolkit's.
    (ptxas.parents[3] / PTH_NAME).unlink()
    bare = check(py, "--expect-ptxas", str(ptxas), env=clean)
    assert bare["exit"] == 1 and not bare["ok"] and "resolves ptxas" in bare["error"], bare
    if triton == "3.5.1":
        alone = check(py, env=clean)
        assert not alone["ok"] and "sm_121a" in alone["error"] and "not defined" in alone["error"], alone
    else:
        # what images set before Triton's ptxas-blackwell variable was known: TRITON_PTXAS_PATH only
        old = check(py, "--expect-ptxas", str(ptxas), env=clean | {"TRITON_PTXAS_PATH": str(ptxas)})
        assert not old["ok"] and "ptxas-blackwell" in old["ptxas"], old
