"""CUDA architecture lists: parsing `TORCH_CUDA_ARCH_LIST`-style entries and turning them into nvcc flags.

The one parser of arch lists and their entries: releases, recipes, the device-code checks and
`inspect --arch` all read them here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..core.errors import InputError

# "12.1a", "9.0", "12.0f", "8.0+PTX": major.minor, an optional feature suffix
# ('a' arch-specific, 'f' family-specific, CUDA >= 12.9) and an optional +PTX.
_ARCH_RE = re.compile(r"^(\d+)\.(\d)([af]?)(\+PTX)?$", re.ASCII)  # ASCII: \d also takes full-width digits


@dataclass(frozen=True)
class CudaArch:
    """One entry of an arch list."""

    major: int
    minor: int
    suffix: str = ""  # "", "a" or "f"
    ptx: bool = False

    @property
    def device(self) -> tuple[int, int]:
        """The compute capability of the GPUs this entry targets, e.g. (12, 1)."""
        return self.major, self.minor

    @property
    def sm(self) -> str:
        """The numeric compute capability, e.g. '121'."""
        return f"{self.major}{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}{self.suffix}{'+PTX' if self.ptx else ''}"


def parse_arch(text: str) -> CudaArch:
    """Parse one arch entry, raising InputError with the accepted form."""
    if not text.isascii():
        raise InputError(f"bad CUDA arch {text!r}: ASCII digits only")
    m = _ARCH_RE.match(text.strip())
    if not m:
        raise InputError(f"bad CUDA arch {text!r}: expected MAJOR.MINOR with an optional a/f suffix "
                         "and +PTX, e.g. '12.1a', '9.0', '12.0f', '8.0+PTX'")
    return CudaArch(int(m[1]), int(m[2]), m[3], bool(m[4]))


def parse_arch_list(entries: Iterable[str]) -> tuple[CudaArch, ...]:
    """Parse a list of arch entries (each may itself hold ';' or space separated items)."""
    out: list[CudaArch] = []
    for entry in entries:
        for item in re.split(r"[;\s]+", entry.strip()):
            if item:
                out.append(parse_arch(item))
    if not out:
        raise InputError("empty CUDA arch list: name at least one arch, e.g. '12.1a'")
    return tuple(out)


def devices_of(entries: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """The distinct compute capabilities of an arch list ('12.1a' -> (12, 1)), in order."""
    return tuple(dict.fromkeys(a.device for a in parse_arch_list(entries)))


def torch_arch_list(archs: tuple[CudaArch, ...]) -> str:
    """The `TORCH_CUDA_ARCH_LIST` spelling: entries joined by ';'."""
    return ";".join(str(a) for a in archs)


def gencode_flags(archs: tuple[CudaArch, ...], *, keep_suffix: bool = True) -> list[str]:
    """nvcc `-gencode` flags, one per arch, plus a PTX entry for '+PTX' arches.

    keep_suffix=False drops the a/f suffix (compute_121 instead of compute_121a): NCCL's
    makefile and the reference images build plain sm_121 code, which needs no arch-specific
    instructions and also runs on later minor revisions of the family.
    """
    flags = []
    for a in archs:
        sm = a.sm + (a.suffix if keep_suffix else "")
        flags.append(f"-gencode=arch=compute_{sm},code=sm_{sm}")
        if a.ptx:
            flags.append(f"-gencode=arch=compute_{sm},code=compute_{sm}")
    return flags
