"""FlashInfer: flashinfer-python from source (kernels JIT-compile at first use), and, when the
release asks for them, the AOT packages flashinfer-cubin and flashinfer-jit-cache for the
release's arch list.

Since mid-2026 a source build of flashinfer-python pip-installs nvidia-nccl-cu13 and other
packages during the build, which would replace the factory's NCCL: FLASHINFER_BUILD_NO_PIP=1.
(0.6.2's backend only copies 3rdparty/cutlass, spdlog, csrc and include into the package and
ignores the variable; it is set for every version so a bump cannot silently start pip-installing.)
"""

from __future__ import annotations

from pathlib import Path

from wheelfactory.recipe_api import (
    BuildContext,
    BuildError,
    CudaArch,
    EnvSpec,
    GitSource,
    InputError,
    Option,
    Recipe,
    Repair,
)

# The GPU majors FlashInfer's artifact store publishes cubins for (flashinfer-cubin downloads them
# all; it compiles nothing): trtllm-gen, DeepGEMM and cuDNN kernels for 10.x (PyPI's flashinfer_cubin
# 0.6.9: sm_100a, sm_100f, sm_103a) and the CuTe-DSL FMHA for 11.0. None for 12.x.
CUBIN_MAJORS = (10, 11)

RECIPE = Recipe(
    name="flashinfer",
    summary="FlashInfer (flashinfer-python; optional AOT flashinfer-cubin and flashinfer-jit-cache)",
    source=GitSource("https://github.com/flashinfer-ai/flashinfer.git", ref="v{version}"),
    outputs=("flashinfer-python",),
    optional_outputs=("flashinfer-cubin", "flashinfer-jit-cache"),
    depends_on=("torch",),
    # The AOT jit-cache takes about 8 GB per nvcc job (FlashInfer's DGX Spark notes).
    mem_per_job_gb=8.0,
    # flashinfer-python alone copies sources; only the AOT jit-cache compiles.
    disk_gb=10.0,
    disk_gb_if=(("jit_cache", False, 2.0),),
    repair=Repair(mode="retag", strip=True),
    smoke=("import flashinfer; print('flashinfer', flashinfer.__version__)",),
    options=(Option("cubin", bool, False, "also build flashinfer-cubin (downloads prebuilt cubins while it builds)"),
             Option("jit_cache", bool, False, "also build flashinfer-jit-cache, the AOT kernels for the arch list "
                    "(hours)")),
)


def environment(spec: EnvSpec) -> dict[str, str]:
    env = {
        "FLASHINFER_BUILD_NO_PIP": "1",
        # FlashInfer ships a .python-version; uv must not download another interpreter.
        "UV_PYTHON_DOWNLOADS": "never",
        "FLASHINFER_CUDA_ARCH_LIST": _flashinfer_arch_list(spec.target.archs),
    }
    if spec.options.get("jit_cache"):
        # FlashInfer's jit-cache backend picks its module set from CI variables when this is unset
        # ("full" under CI, a smaller "edge_fm" set elsewhere); the factory passes no such variable,
        # so name it: every module PyPI's jit-cache wheels have, compiled for the arch list above.
        env["FLASHINFER_AOT_BUILD_PROFILE"] = "full"
    if spec.options.get("cubin") and not any(a.major in CUBIN_MAJORS for a in spec.target.archs):
        archs = " ".join(str(a) for a in spec.target.archs)
        majors = " and ".join(f"{m}.x" for m in CUBIN_MAJORS)
        raise InputError(f"flashinfer {spec.version}: options.cubin builds flashinfer-cubin from FlashInfer's prebuilt "
                         f"cubins, which exist for {majors} GPUs only; none would load on the release's arch list "
                         f"({archs}), and `images` would leave the wheel out. Drop "
                         "options.cubin (options.jit_cache compiles FlashInfer's kernels for the arch list)")
    return env


def _flashinfer_arch_list(archs: tuple[CudaArch, ...]) -> str:
    """FlashInfer's spelling: entries split on single spaces, each MAJOR.MINOR with its a/f suffix.
    It compiles SASS only (compute_X,code=sm_X per entry) and has no PTX form: a '+PTX' entry
    gives its SASS."""
    return " ".join(f"{a.major}.{a.minor}{a.suffix}" for a in archs)


def build(ctx: BuildContext) -> list[Path]:
    wheels = ctx.build_wheel()
    # AOT packages live in sub-projects of the source tree; build them only when asked, since
    # flashinfer-jit-cache takes hours.
    for option, subdir in (("cubin", "flashinfer-cubin"), ("jit_cache", "flashinfer-jit-cache")):
        if not ctx.step.options[option]:
            continue
        if option == "cubin" and ctx.offline:
            # flashinfer-cubin's build backend downloads the cubins from FLASHINFER_CUBINS_REPOSITORY.
            raise BuildError("flashinfer-cubin downloads prebuilt cubins while it builds, which --offline forbids; "
                             "build it online, or drop options.cubin from the release")
        wheels += ctx.build_wheel(ctx.src / subdir)
    return wheels
