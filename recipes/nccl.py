"""NCCL, built with its own makefile for the release's arch list and packaged as the
`nvidia-nccl-cu13` wheel that PyTorch's CUDA 13 wheels depend on.

Why this name: upstream's `make pkg.python_wheel.build` makes a wheel called `nccl` that writes
the same nvidia/nccl/lib/libnccl.so.2 as PyPI's nvidia-nccl-cu13 -- two packages owning one
file. Users of the anchor images hit hangs when the pip NCCL and the system NCCL differed
(vllm-project/vllm#42354, #41725). One wheel with the name torch asks for avoids both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from wheelfactory.cuda_arch import gencode_flags
from wheelfactory.recipe import EnvSpec, Recipe, Repair
from wheelfactory.sources import GitSource
from wheelfactory.wheelpack import pack_tree

DIST = "nvidia-nccl-cu13"

# Cross-builds (`build --cross`): NCCL's makefiles pass `-ccbin $(CXX)` to nvcc and link with
# $(CXX) against $(CUDA_HOME)'s libraries, so the target's g++ and the cross CUDA root are all it needs.
CROSS = True

RECIPE = Recipe(
    name="nccl",
    summary="NVIDIA NCCL for the release's CUDA arches, as the nvidia-nccl-cu13 wheel",
    source=GitSource("https://github.com/NVIDIA/nccl.git", ref="v{version}", submodules=False),
    outputs=(DIST,),
    # nvcc on NCCL's generated kernels peaks around 1-1.5 GB per job.
    mem_per_job_gb=1.5,
    repair=Repair(mode="retag", strip=True),
    smoke=("import ctypes, glob, nvidia.nccl, os; "
           "lib = ctypes.CDLL(glob.glob(os.path.join(list(nvidia.nccl.__path__)[0], 'lib', 'libnccl.so.2'))[0]); "
           "v = ctypes.c_int(); assert lib.ncclGetVersion(ctypes.byref(v)) == 0; print('nccl', v.value)",),
    version_pattern=r"\d+\.\d+\.\d+-\d+",  # upstream's tag form, e.g. 2.29.2-1 (PKG_REVISION after the dash)
)


def _wheel_version(release_version: str, key: str) -> str:
    """'2.29.2-1' -> '2.29.2+wf.<key8>': satisfies torch's ==2.29.2 pin (local labels are ignored by
    pins without one) and names the build in the file name."""
    return f"{release_version.split('-')[0]}+wf.{key[:8]}"


def environment(spec: EnvSpec) -> dict[str, str]:
    # NCCL's default NVCC_GENCODE for CUDA >= 13 covers sm_75..sm_110 + PTX and omits sm_121:
    # always pass the target's arches. NCCL needs no arch-specific ('a') instructions, and the
    # reference images build plain compute_121/sm_121, so the suffix is dropped.
    return {"NVCC_GENCODE": " ".join(gencode_flags(spec.target.archs, keep_suffix=False))}


def _make_command(ctx, builddir: Path) -> list[str]:
    """NCCL's `make src.build` for the target arches; in a cross step with the target's g++ as CXX
    (nvcc's host compiler and the linker) and the cross CUDA root as CUDA_HOME."""
    cmd = ["make", f"-j{ctx.jobs}", "src.build", f"BUILDDIR={builddir}",
           f"NVCC_GENCODE={ctx.env['NVCC_GENCODE']}", f"CUDA_HOME={ctx.cuda_home}"]
    if ctx.cross is not None:
        cmd.append(f"CXX={ctx.cross.cxx}")
    return cmd


def build(ctx) -> list[Path]:
    builddir = ctx.work / "build"
    ctx.run(_make_command(ctx, builddir))
    tree = ctx.work / "wheel-tree"
    # A resumed work tree may hold the tree a stopped run began packing: start it over, so that
    # the hook is idempotent (it once failed here with FileExistsError on resume).
    shutil.rmtree(tree, ignore_errors=True)
    lib_dir = tree / "nvidia" / "nccl" / "lib"
    lib_dir.mkdir(parents=True)
    # Wheels hold no symlinks: ship the real library under its soname, as PyPI's wheel does.
    shutil.copy2((builddir / "lib" / "libnccl.so.2").resolve(), lib_dir / "libnccl.so.2")
    shutil.copytree(builddir / "include", tree / "nvidia" / "nccl" / "include")
    license_file = ctx.src / "LICENSE.txt"
    return [pack_tree(tree, DIST, _wheel_version(ctx.version, ctx.step.key), f"py3-none-{ctx.target.platform}",
                      ctx.dist, summary=f"NVIDIA NCCL {ctx.version} built by wheelfactory for "
                      f"{';'.join(ctx.target.cuda_arch_list)}",
                      license_file=license_file if license_file.exists() else None,
                      extra_metadata={"License": "BSD-3-Clause"})]
