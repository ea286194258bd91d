"""Prebuilt cubin packages in an image: kept only when they carry code for the release's GPUs.

A cubin is SASS for one GPU architecture; the driver will not load it on another (an `sm_100a`
cubin on a GB10, compute capability 12.1, or `sm_100f`: family 10 only). PyPI's flashinfer-cubin
0.6.x ships cubins for sm_100a/sm_100f/sm_103a only (flashinfer_cubin-0.6.9: 8,871 sm100f, 1,130
sm103a, 242 sm100a and 317 DeepGEMM cubins with no arch in their names; none for 12.x), and
FlashInfer's prebuilt kernels for another arch gave wrong output on a Spark
(flashinfer-ai/flashinfer#3294, vllm-project/vllm#40082). `images` leaves such a package out of the
image, saying why; FlashInfer then JIT-compiles its kernels for the GPU it runs on.

The archs are read from the cubins' file names (`..._sm100f.cubin`, `FmhaSm100aKernel...`), which
is how FlashInfer's artifact store names them; a cubin whose name carries none counts for nothing.
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wheelfactory.cuda import cuda_compat as cc

# Python packages whose wheels are nothing but prebuilt cubins for some architectures
CUBIN_PACKAGES = frozenset({"flashinfer-cubin"})
# "sm100f", "Sm100a", "sm_90a", "SM120": the last one in a path names its arch
_ARCH = re.compile(r"sm_?(\d{2,3})([af]?)(?![0-9])", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class CubinArchs:
    """The cubins of one wheel by the arch their names give (`sm_100f`); `unnamed` carry none."""

    archs: Counter[str]
    unnamed: int

    @property
    def total(self) -> int:
        return sum(self.archs.values()) + self.unnamed


def cubin_archs(names: Iterable[str]) -> CubinArchs:
    """Count the `.cubin` files of a wheel's member names by arch."""
    archs: Counter[str] = Counter()
    unnamed = 0
    for name in names:
        if not name.endswith(".cubin"):
            continue
        found = _ARCH.findall(name)
        if found:
            sm, suffix = found[-1]
            archs[f"sm_{sm}{suffix.lower()}"] += 1
        else:
            unnamed += 1
    return CubinArchs(archs, unnamed)


def wheel_cubin_archs(wheel: Path | zipfile.ZipFile) -> CubinArchs:
    """cubin_archs of a wheel file (only its zip directory is read)."""
    if isinstance(wheel, zipfile.ZipFile):
        return cubin_archs(wheel.namelist())
    with zipfile.ZipFile(wheel) as zf:
        return cubin_archs(zf.namelist())


def foreign_only(found: CubinArchs, devices: Sequence[tuple[int, int]]) -> str | None:
    """Why a cubin package serves none of the devices (compute capabilities such as (12, 1)), or None
    when some cubin loads natively on one of them."""
    wanted = ", ".join(f"{d[0]}.{d[1]}" for d in devices)
    if not found.total:
        return f"it holds no cubins (the release's GPUs: {wanted})"
    if any(cc.best([arch], d) == cc.NATIVE for arch in found.archs for d in devices):
        return None
    listed = ", ".join(f"{n:,} {a}" for a, n in sorted(found.archs.items(), key=lambda x: (-x[1], x[0])))
    unnamed = f" and {found.unnamed:,} with no arch in their names" if found.unnamed else ""
    return (f"its {found.total:,} cubins are for other GPUs ({listed}{unnamed}), none for the release's "
            f"{wanted}; the driver cannot load them there and FlashInfer JIT-compiles its kernels instead "
            "(flashinfer-ai/flashinfer#3294)")


def left_out(packages: Iterable[tuple[str, str, Path]], devices: Sequence[tuple[int, int]]) -> dict[str, str]:
    """Of (name, version, wheel file) of a lock, the cubin packages to leave out of the image -> why."""
    out = {}
    for name, version, wheel in packages:
        if name in CUBIN_PACKAGES and (why := foreign_only(wheel_cubin_archs(wheel), devices)) is not None:
            out[name] = f"{name} {version} ({wheel.name}) is left out of the image: {why}"
    return out
