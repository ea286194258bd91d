"""torchvision with its CUDA ops, built against the factory's torch.

torchvision compiles CUDA ops only if a GPU is visible or FORCE_CUDA=1: build hosts and
containers usually see none, which silently produced CPU-only ops in the anchors' images.
"""

from __future__ import annotations

from pathlib import Path

from wheelfactory.recipe_api import BuildContext, EnvSpec, GitSource, Recipe, Repair, require_pin, torch_arch_list

RECIPE = Recipe(
    name="torchvision",
    summary="torchvision with CUDA ops, against the factory's torch",
    source=GitSource("https://github.com/pytorch/vision.git", ref="v{version}"),
    outputs=("torchvision",),
    depends_on=("torch",),
    mem_per_job_gb=3.0,
    disk_gb=3.0,
    repair=Repair(mode="retag", strip=True),
    smoke=("import torchvision, torchvision.ops; print('torchvision', torchvision.__version__)",),
)

IMAGE_HEADERS = {"png": "png.h", "jpeg": "jpeglib.h", "webp": "webp/decode.h"}


def environment(spec: EnvSpec) -> dict[str, str]:
    return {
        "FORCE_CUDA": "1",
        "TORCH_CUDA_ARCH_LIST": torch_arch_list(spec.target.archs),
        "BUILD_VERSION": spec.version,
        # setup.py pins its torch requirement to PYTORCH_VERSION.
        "PYTORCH_VERSION": spec.component_versions["torch"],
    }


def build(ctx: BuildContext) -> list[Path]:
    found = {lib: any(Path(d, h).exists() for d in ("/usr/include", "/usr/local/include"))
             for lib, h in IMAGE_HEADERS.items()}
    missing = sorted(lib for lib, ok in found.items() if not ok)
    ctx.runner.note("image libraries: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in found.items())
                    + (f"; torchvision.io will lack {', '.join(missing)} (install lib{missing[0]}-dev etc.)"
                       if missing else ""))
    wheels = ctx.build_wheel()
    for wheel in wheels:
        require_pin(wheel, "torch", ctx.env["PYTORCH_VERSION"])
    return wheels
