"""Which device code a GPU can run: the rules of CUDA binary compatibility, read from data.

The rules live in data/cuda_compat.toml, each with its NVIDIA source, so that they can be read
and checked apart from the code. This module only names device code (`sm_121a`, `compute_80`),
reads the rules and answers, for one piece of code and one device, whether the device loads it
natively, only through the driver's JIT, or not at all.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from .cuda_arch import parse_arch

NATIVE, JIT, NONE = "native", "jit", "none"

_CODE_RE = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")
_LOADS_ON = ("same-major-not-older", "exact", "any-not-older")


@dataclass(frozen=True, order=True)
class DeviceCode:
    """One piece of device code as nvcc names it: SASS for a real arch or PTX for a virtual one."""

    kind: str  # "sass" (sm_XY, a cubin) or "ptx" (compute_XY)
    major: int
    minor: int
    suffix: str = ""  # "", "a" (arch-specific) or "f" (family-specific)

    @property
    def name(self) -> str:
        prefix = "sm" if self.kind == "sass" else "compute"
        return f"{prefix}_{self.major}{self.minor}{self.suffix}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Rule:
    kind: str
    suffix: str
    loads_on: str
    jit: bool


def parse_code(text: str) -> DeviceCode:
    """'sm_121a' -> DeviceCode('sass', 12, 1, 'a'); 'compute_80' -> DeviceCode('ptx', 8, 0)."""
    m = _CODE_RE.match(text.strip())
    if not m:
        raise InputError(f"bad device code {text!r}: expected sm_XY or compute_XY with an optional a/f "
                         "suffix, e.g. 'sm_121a', 'sm_120f', 'compute_80'")
    return DeviceCode("sass" if m[1] == "sm" else "ptx", int(m[2]), int(m[3]), m[4])


def parse_device(text: str) -> tuple[int, int]:
    """A device's compute capability from '12.1' (or an arch-list entry such as '12.1a')."""
    return parse_arch(text).device


@functools.cache
def rules(path: Path | None = None) -> dict[tuple[str, str], Rule]:
    """The rules by (kind, suffix); every combination must be covered exactly once."""
    path = path or Path(__file__).with_name("data") / "cuda_compat.toml"
    with open(path, "rb") as f:
        table = tomllib.load(f)
    found: dict[tuple[str, str], Rule] = {}
    for entry in table.get("rule", []):
        rule = Rule(entry["kind"], entry["suffix"], entry["loads_on"], bool(entry["jit"]))
        if rule.loads_on not in _LOADS_ON:
            raise InputError(f"{path}: loads_on {rule.loads_on!r} is not one of {', '.join(_LOADS_ON)}")
        if (rule.kind, rule.suffix) in found:
            raise InputError(f"{path}: two rules for kind {rule.kind!r} suffix {rule.suffix!r}")
        found[(rule.kind, rule.suffix)] = rule
    missing = {(k, s) for k in ("sass", "ptx") for s in ("", "a", "f")} - set(found)
    if missing:
        raise InputError(f"{path}: no rule for {sorted(missing)}")
    return found


def how_loaded(code: DeviceCode | str, device: tuple[int, int] | str) -> str:
    """NATIVE, JIT or NONE: how a device of this compute capability runs this code."""
    code = parse_code(code) if isinstance(code, str) else code
    dev = parse_device(device) if isinstance(device, str) else device
    rule = rules()[(code.kind, code.suffix)]
    own = (code.major, code.minor)
    if rule.loads_on == "exact":
        ok = dev == own
    elif rule.loads_on == "same-major-not-older":
        ok = dev[0] == own[0] and dev[1] >= own[1]
    else:  # any-not-older
        ok = dev >= own
    if not ok:
        return NONE
    return JIT if rule.jit else NATIVE


def best(codes: Iterable[DeviceCode | str], device: tuple[int, int] | str) -> str:
    """How a device runs an object holding all these codes: the best of them (native > jit > none)."""
    found = {how_loaded(c, device) for c in codes}
    return NATIVE if NATIVE in found else JIT if JIT in found else NONE


def is_foreign_specific(code: DeviceCode | str, devices: Iterable[tuple[int, int]]) -> bool:
    """Arch-specific code (sm_XYa) that no device of the list can load: compiled for another GPU."""
    code = parse_code(code) if isinstance(code, str) else code
    return code.suffix == "a" and all(how_loaded(code, d) == NONE for d in devices)


