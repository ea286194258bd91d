"""Triton (and triton_kernels) from source.

Triton's build downloads an LLVM build, nlohmann/json and NVIDIA's ptxas/cuobjdump/nvdisasm/
crt/cudart/cupti archives. The factory declares LLVM and json as extra sources
(recipes/data/triton.toml, per version) so that `fetch` downloads them, takes NVIDIA's tools
from the host's CUDA toolkit, and builds with TRITON_OFFLINE_BUILD=1: no network during `build`.
"""

from __future__ import annotations

from pathlib import Path

from wheelfactory.recipe_api import BuildContext, EnvSpec, GitSource, Recipe, Repair, Source, UrlSource, version_table

RECIPE = Recipe(
    name="triton",
    summary="Triton compiler and triton_kernels, built offline from pre-fetched LLVM and NVIDIA tools",
    source=GitSource("https://github.com/triton-lang/triton.git", ref="v{version}"),
    outputs=("triton",),
    optional_outputs=("triton-kernels",),
    build_requires=("pybind11>=2.13.1", "cmake>=3.20,<4", "ninja>=1.11.1", "lit"),
    # setup.py defaults to 2 x nproc jobs (40 on GB10) and runs out of memory
    # (triton-lang/triton#11123, #1403): the factory passes MAX_JOBS from its memory-aware default.
    mem_per_job_gb=3.0,
    disk_gb=15.0,
    repair=Repair(mode="retag", strip=True),
    smoke=("import triton; print('triton', triton.__version__)",),
    data_files=("triton.toml",),
)

def _toolchain(version: str) -> dict:
    """The pinned LLVM hash and json version of a Triton version (recipes/data/triton.toml)."""
    return version_table(RECIPE, __file__, "triton.toml", version, "copy the tag's cmake/llvm-hash.txt into it")


def extra_sources(spec: EnvSpec) -> dict[str, Source]:
    tc = _toolchain(spec.version)
    llvm_os = "ubuntu-arm64" if spec.target.machine == "aarch64" else "ubuntu-x64"
    return {
        "llvm": UrlSource(f"https://oaitriton.blob.core.windows.net/public/llvm-builds/"
                          f"llvm-{tc['llvm_hash'][:8]}-{llvm_os}.tar.gz", None),
        "json": UrlSource(f"https://github.com/nlohmann/json/releases/download/v{tc['json']}/include.zip", None),
    }


def environment(spec: EnvSpec) -> dict[str, str]:
    return {
        "TRITON_OFFLINE_BUILD": "1",
        "LLVM_SYSPATH": "${source_llvm}",
        "JSON_SYSPATH": "${source_json}",
        # The host toolkit's tools: ptxas must know sm_121, which Triton 3.5's pinned 12.8 ptxas
        # does not. Runtime images then provide ptxas too (TRITON_PTXAS_PATH there as well).
        "TRITON_PTXAS_PATH": "${cuda_home}/bin/ptxas",
        "TRITON_PTXAS_BLACKWELL_PATH": "${cuda_home}/bin/ptxas",
        "TRITON_CUOBJDUMP_PATH": "${cuda_home}/bin/cuobjdump",
        "TRITON_NVDISASM_PATH": "${cuda_home}/bin/nvdisasm",
        "TRITON_CUDACRT_PATH": "${cuda_home}/include",
        "TRITON_CUDART_PATH": "${cuda_home}/include",
        "TRITON_CUPTI_INCLUDE_PATH": "${cuda_home}/extras/CUPTI/include",
        "TRITON_CUPTI_LIB_PATH": "${cuda_home}/extras/CUPTI/lib64",
        "TRITON_BUILD_WITH_CCACHE": "true",
        # Each link of libtriton takes several GB.
        "TRITON_PARALLEL_LINK_JOBS": "2",
        "TRITON_HOME": "${work}/triton-home",
    }


def build(ctx: BuildContext) -> list[Path]:
    wheels = ctx.build_wheel()
    kernels = ctx.src / "python" / "triton_kernels"
    if kernels.is_dir():
        wheels += ctx.build_wheel(kernels)
    return wheels
