"""PyTorch with CUDA, built against the factory's NCCL wheel.

Flags follow the reference image (scitrera/cuda-containers Dockerfile.base) and PyTorch's own
aarch64 CUDA 13 wheels (.ci/manywheel/build_cuda.sh): system NCCL from the nvidia-nccl-cu13
wheel, RPATHs into the nvidia/* wheel layout, compressed fatbins, Requires-Dist on the CUDA
library wheels so that a plain `pip install` elsewhere pulls the right NCCL and cuBLAS.
"""

from __future__ import annotations

from pathlib import Path

from wheelfactory.recipe_api import (
    BuildContext,
    EnvSpec,
    GitSource,
    Recipe,
    Repair,
    repack,
    torch_arch_list,
    unpack,
    version_table,
)

RECIPE = Recipe(
    name="torch",
    summary="PyTorch with CUDA for the release's arch list, against the factory's NCCL",
    source=GitSource("https://github.com/pytorch/pytorch.git", ref="v{version}"),
    outputs=("torch",),
    depends_on=("nccl",),
    # pyproject's [build-system] requires (cmake, ninja, numpy, pyyaml, ...) are read from the
    # source; patchelf sets the RPATHs below.
    build_requires=("patchelf>=0.17",),
    # conda-forge builds with MAX_JOBS=4 on 32 GB; flash-attention and CUTLASS translation units
    # take several GB each under nvcc.
    mem_per_job_gb=6.0,
    disk_gb=40.0,
    repair=Repair(mode="retag", strip=True),
    smoke=("import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, "
           "'nccl', torch.cuda.nccl.version() if torch.cuda.is_available() else 'n/a (no GPU)')",),
    data_files=("cuda_wheels.toml",),
)

# Where a CUDA 13 torch finds its libraries inside site-packages, relative to torch/lib
# (PyTorch's build_cuda.sh for CUDA 13 uses the same list).
RPATHS = tuple(f"$ORIGIN/../../nvidia/{d}/lib" for d in ("nccl", "cudnn", "nvshmem", "cusparselt", "cu13"))


def _cuda_wheel_requirements(cuda: str) -> list[str]:
    """The CUDA library wheels torch declares for a CUDA version (recipes/data/cuda_wheels.toml)."""
    major_minor = ".".join(cuda.split(".")[:2])
    return list(version_table(RECIPE, __file__, "cuda_wheels.toml", major_minor,
                              f"add the CUDA library wheel pins for CUDA {major_minor}")["requires"])


def _nccl_pin(spec: EnvSpec) -> str:
    return f"nvidia-nccl-cu13=={spec.component_versions['nccl'].split('-')[0]}"


def requirements(spec: EnvSpec) -> list[str]:
    # cuDNN, cuSPARSELt and NVSHMEM headers and libraries come from their wheels, so torch links
    # against exactly what its Requires-Dist will install.
    return [r for r in _cuda_wheel_requirements(spec.target.cuda)
            if r.split("==")[0] in ("nvidia-cudnn-cu13", "nvidia-cusparselt-cu13", "nvidia-nvshmem-cu13")]


def environment(spec: EnvSpec) -> dict[str, str]:
    env = {
        "USE_CUDA": "1", "USE_CUDNN": "1", "USE_CUSPARSELT": "1", "USE_CUFILE": "0",
        "USE_NCCL": "1", "USE_SYSTEM_NCCL": "1", "USE_DISTRIBUTED": "1", "USE_TENSORPIPE": "1",
        # The reference sets USE_MPI=1, but nothing in the stack uses torch's MPI backend and it
        # would tie the wheel to the build host's MPI.
        "USE_MPI": "0",
        "BUILD_TEST": "0", "USE_MKLDNN": "1", "USE_OPENMP": "1", "USE_FBGEMM": "1", "USE_FBGEMM_GENAI": "1",
        "USE_FLASH_ATTENTION": "1", "USE_MEM_EFF_ATTENTION": "1",
        "USE_NNPACK": "0", "USE_QNNPACK": "0", "USE_XNNPACK": "0",
        "TORCH_CUDA_ARCH_LIST": torch_arch_list(spec.target.archs),
        "PYTORCH_BUILD_VERSION": spec.version,
        "PYTORCH_BUILD_NUMBER": "1",
        # The factory's NCCL, as installed from its wheel into the build venv.
        "NCCL_ROOT": "${site}/nvidia/nccl",
        "NCCL_INCLUDE_DIR": "${site}/nvidia/nccl/include",
        "NCCL_LIB_DIR": "${site}/nvidia/nccl/lib",
        "CUDNN_ROOT": "${site}/nvidia/cudnn",
        "CUDNN_INCLUDE_DIR": "${site}/nvidia/cudnn/include",
        "CUDNN_LIB_DIR": "${site}/nvidia/cudnn/lib",
        "CUSPARSELT_ROOT": "${site}/nvidia/cusparselt",
        "NVSHMEM_HOME": "${site}/nvidia/nvshmem",
        # Without this the wheel declares no nvidia-* dependencies and expects a system CUDA/NCCL.
        "PYTORCH_EXTRA_INSTALL_REQUIREMENTS": "|".join([_nccl_pin(spec)] + _cuda_wheel_requirements(spec.target.cuda)),
        # As PyTorch's CUDA 13 wheels: compressed fatbins keep libtorch_cuda.so within bounds.
        "TORCH_NVCC_FLAGS": "-Xfatbin -compress-all -compress-mode=size",
        "CMAKE_BUILD_TYPE": "Release",
    }
    if spec.target.machine == "aarch64":
        # conda-forge and PyTorch's aarch64 wheels: orders .text so that hot code is near
        # (avoids relocation overflows in the very large libtorch_cuda.so on aarch64).
        env["USE_PRIORITIZED_TEXT_FOR_LD"] = "1"
    return env


def prepare(ctx: BuildContext) -> None:
    # PyTorch's FindNCCL links -lnccl, which needs the unversioned name; the wheel (like PyPI's)
    # ships only libnccl.so.2. The link lives in the build venv only.
    ctx.run(["ln", "-sf", "libnccl.so.2", ctx.site / "nvidia" / "nccl" / "lib" / "libnccl.so"])


def configure(ctx: BuildContext) -> None:
    # PyTorch's own configure-only mode: CMake writes build/build.ninja (minutes) and stops; the
    # build phase's setup.py then reuses that build directory instead of configuring again.
    ctx.run([ctx.python, "setup.py", "build", "--cmake-only"])
    ctx.check_device_code(ctx.src / "build" / "build.ninja")


def build(ctx: BuildContext) -> list[Path]:
    wheels = ctx.build_wheel()
    for wheel in wheels:
        tree = unpack(wheel, ctx.work / "rpath")
        for lib in sorted((tree / "torch" / "lib").glob("*.so*")):
            # DT_RPATH, not RUNPATH (--force-rpath, as PyTorch's build_cuda.sh): it also applies to the
            # libraries these load (cuDNN -> cuBLAS), which RUNPATH would not.
            ctx.run(["patchelf", "--force-rpath", "--add-rpath", ":".join(RPATHS), lib])
        repack(tree, wheel.name, wheel.parent)
    return wheels
