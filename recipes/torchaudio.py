"""torchaudio with CUDA, built against the factory's torch.

USE_CUDA defaults to torch.cuda.is_available(), false on GPU-less build hosts: set it.
"""

from __future__ import annotations

from pathlib import Path

from wheelfactory.recipe_api import BuildContext, EnvSpec, GitSource, Recipe, Repair, require_pin, torch_arch_list

RECIPE = Recipe(
    name="torchaudio",
    summary="torchaudio with CUDA, against the factory's torch",
    source=GitSource("https://github.com/pytorch/audio.git", ref="v{version}"),
    outputs=("torchaudio",),
    depends_on=("torch",),
    mem_per_job_gb=3.0,
    disk_gb=3.0,
    repair=Repair(mode="retag", strip=True),
    smoke=("import torchaudio; print('torchaudio', torchaudio.__version__)",),
)


def environment(spec: EnvSpec) -> dict[str, str]:
    return {
        "USE_CUDA": "1",
        "TORCH_CUDA_ARCH_LIST": torch_arch_list(spec.target.archs),
        "BUILD_VERSION": spec.version,
        "PYTORCH_VERSION": spec.component_versions["torch"],
    }


def build(ctx: BuildContext) -> list[Path]:
    wheels = ctx.build_wheel()
    for wheel in wheels:
        require_pin(wheel, "torch", ctx.env["PYTORCH_VERSION"])
    return wheels
