"""The NVIDIA driver each CUDA version's output needs (data/cuda_drivers.toml): the images' driver gate."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "cuda_drivers.toml"


@dataclass(frozen=True)
class DriverFloor:
    """What code built by one CUDA major.minor needs from the host's driver."""

    cuda: str  # '13.1'
    minimum_driver: str  # below it nothing runs: '580'
    minimum_cuda_api: int  # the same floor as cuDriverGetVersion() reports it: 13000
    ptx_driver: str  # the toolkit's own driver, needed to JIT its PTX: '590.44.01'


@functools.cache
def _table(path: Path = DATA) -> dict[str, DriverFloor]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {cuda: DriverFloor(cuda, str(t["minimum_driver"]), int(t["minimum_cuda_api"]), str(t["ptx_driver"]))
            for cuda, t in data.items()}


def driver_floor(cuda: str) -> DriverFloor | None:
    """The driver floor of a CUDA version ('13.1.0' or '13.1'); None for a version the data lacks."""
    return _table().get(".".join(cuda.split(".")[:2]))


def gate_env(cuda: str) -> dict[str, str]:
    """The environment an image's entrypoint reads to gate on the host's driver (empty: no gate)."""
    floor = driver_floor(cuda)
    if floor is None:
        return {}
    return {"WHEELFACTORY_CUDA_VERSION": floor.cuda, "WHEELFACTORY_MIN_DRIVER": floor.minimum_driver,
            "WHEELFACTORY_MIN_CUDA_API": str(floor.minimum_cuda_api), "WHEELFACTORY_PTX_DRIVER": floor.ptx_driver}
