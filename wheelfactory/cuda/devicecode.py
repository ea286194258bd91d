"""The device-code plan: what a configured CMake build will compile for the GPU, read before it does.

A CMake configure writes build.ninja, in which every CUDA object has its nvcc flags. From the
`-gencode`/`--generate-code`/`-arch` flags of each object this module knows which SASS and PTX
it will carry, and so, with the rules of cuda_compat, how each device of the release will run
it: natively, through the driver's JIT, or not at all. That takes minutes to learn (a configure)
instead of hours (a build), and it is checked against a policy before anything is compiled:

- an object that no device of the release can load at all is an error: it is either a lost
  kernel family (sm_120a code in a GB10 build) or compile time spent for nothing (FlashAttention
  3's Hopper-only objects in a build for 12.1);
- an object that a device can only JIT is an error unless the recipe data declares its family an
  accepted JIT fallback, with the reason (likewise, objects with no device code at all, such as a
  .cu file that only registers torch ops, can be declared with their reason);
- arch-specific code for a device outside the release (sm_XYa) is always reported.

With several devices in a release (9.0a;12.1a), an object compiled for one of them only is
normal (vLLM compiles Hopper and Blackwell variants of a kernel in different files).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..core.errors import InputError
from . import cuda_compat as cc
from .cuda_arch import devices_of
from .cuda_compat import JIT, NATIVE, NONE, DeviceCode

# `-gencode arch=compute_90a,code=sm_90a`, `-gencode=arch=...`,
# `--generate-code=arch=compute_80,code=[compute_80,sm_80]`
_GENCODE_RE = re.compile(r"(?:-gencode|--generate-code)[= ]\s*\"?arch=(compute_\w+),code=(\[[^\]]*\]|[\w]+)")
# `-arch=sm_90` / `--gpu-architecture sm_90`: SASS for sm_90 plus PTX for compute_90 (nvcc's shorthand)
_ARCH_RE = re.compile(r"(?:^|\s)(?:-arch|--gpu-architecture)[= ]\s*(sm_\w+|compute_\w+)")
_OBJECT_RE = re.compile(r"CMakeFiles/(?P<target>[^/]+)\.dir/(?P<rel>.+?)\.o(?:bj)?$")


@dataclass(frozen=True)
class CudaObject:
    """One CUDA translation unit of the build and the device code it will carry."""

    target: str  # the CMake target (_C, _moe_C, _vllm_fa3_C, ...)
    source: str  # the source path relative to the target's directory
    codes: tuple[DeviceCode, ...]

    @property
    def family(self) -> str:
        """The kernel family: target and source directory (`_C:csrc/quantization/gptq_marlin`)."""
        return f"{self.target}:{PurePosixPath(self.source).parent}"

    @property
    def name(self) -> str:
        return f"{self.target}:{self.source}"


def codes_from_flags(flags: str) -> tuple[DeviceCode, ...]:
    """The device code an nvcc command line produces, from its -gencode/-arch flags."""
    found: set[DeviceCode] = set()
    for m in _GENCODE_RE.finditer(flags):
        for code in m[2].strip("[]").split(","):
            if code.strip():
                found.add(cc.parse_code(code.strip()))
    if not found:
        for m in _ARCH_RE.finditer(flags):
            code = cc.parse_code(m[1])
            found.add(code)
            if code.kind == "sass":  # -arch=sm_XY also embeds compute_XY PTX
                found.add(DeviceCode("ptx", code.major, code.minor, code.suffix))
    return tuple(sorted(found))


def logical_lines(text: str) -> Iterable[str]:
    """build.ninja lines with `$`-continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = raw.lstrip() if pending else raw  # ninja skips a continuation's leading blanks
        if line.endswith("$") and not line.endswith("$$"):
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse_ninja(text: str, roots: Mapping[str, str] | None = None) -> list[CudaObject]:
    """Every CUDA object of a CMake-generated build.ninja with its device code.

    CMake names the object of a source outside the project by its absolute path
    (`CMakeFiles/_C.dir/home/me/qutlass/csrc/gemm.cu.o`); `roots` ({"qutlass": "/home/me/qutlass"})
    turns that into `<qutlass>/csrc/gemm.cu`, so families and allowances do not depend on where a
    tree was unpacked.
    """
    prefixes = sorted(((path.strip("/") + "/", f"<{name}>/") for name, path in (roots or {}).items()),
                      key=lambda p: -len(p[0]))
    objects: list[CudaObject] = []
    current: tuple[str, str] | None = None
    flags: list[str] = []

    def close() -> None:
        if current is not None:
            objects.append(CudaObject(current[0], current[1], codes_from_flags(" ".join(flags))))

    for line in logical_lines(text):
        if line.startswith("build "):
            close()
            current, flags = None, []
            head = line[len("build "):]
            outputs, _, rest = head.partition(": ")
            rule = rest.split(" ", 1)[0]
            if rule.startswith("CUDA_COMPILER"):
                out = outputs.split(" ")[0].replace("$:", ":").replace("$ ", " ")
                m = _OBJECT_RE.search(out)
                if m:
                    rel = m["rel"]
                    for prefix, label in prefixes:
                        if rel.startswith(prefix):
                            rel = label + rel[len(prefix):]
                            break
                    current = (m["target"], rel)
        elif current is not None and line.startswith("  ") and "=" in line:
            name, _, value = line.strip().partition(" = ")
            if name in ("FLAGS", "DEFINES", "CUDA_FLAGS", "ARCH_FLAGS"):
                flags.append(value)
    close()
    return objects


# -- policy ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowance:
    """Objects the recipe data accepts with less than native code, and why.

    verdict "jit":  a family that runs through the driver's JIT on some device ([[jit_fallback]]);
    verdict "none": objects with no code any device of the release loads, such as a .cu file that
                    only registers torch ops ([[no_device_code]]).
    """

    match: str  # fnmatch pattern over "<target>:<source>" (e.g. "_C:csrc/quantization/awq/*")
    reason: str
    devices: tuple[str, ...] = ()  # compute capabilities it applies to; empty: all
    verdict: str = JIT


@dataclass
class FamilyRow:
    family: str
    objects: int = 0
    sass: set[str] = field(default_factory=set)
    ptx: set[str] = field(default_factory=set)
    verdicts: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> {native/jit/none: n}
    accepted: str | None = None  # the reason an allowance gives, where one applied


@dataclass
class DeviceCodePlan:
    """The objects, the family table and what the policy says about them."""

    devices: tuple[tuple[int, int], ...]
    objects: list[CudaObject]
    rows: list[FamilyRow]
    errors: list[str]
    warnings: list[str]
    dead_objects: list[str]  # objects no device of the release can load

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": [f"{a}.{b}" for a, b in self.devices],
            "objects": len(self.objects),
            "families": [{"family": r.family, "objects": r.objects, "sass": sorted(r.sass), "ptx": sorted(r.ptx),
                          "verdicts": r.verdicts, "accepted": r.accepted} for r in self.rows],
            "errors": self.errors,
            "warnings": self.warnings,
            "dead_objects": self.dead_objects,
        }


def _device_name(dev: tuple[int, int]) -> str:
    return f"{dev[0]}.{dev[1]}"


def evaluate(objects: Sequence[CudaObject], arch_list: Sequence[str],
             allowances: Sequence[Allowance] = ()) -> DeviceCodePlan:
    """Judge every object against the release's devices (see the module docstring)."""
    devices = devices_of(arch_list)
    rows: dict[str, FamilyRow] = {}
    errors: list[str] = []
    warnings: list[str] = []
    dead: list[str] = []
    jit_bad: dict[tuple[str, str], int] = {}
    dead_by_family: dict[str, int] = {}
    foreign: dict[tuple[str, str], int] = {}
    for obj in objects:
        row = rows.setdefault(obj.family, FamilyRow(obj.family))
        row.objects += 1
        for code in obj.codes:
            (row.sass if code.kind == "sass" else row.ptx).add(code.name)
            if cc.is_foreign_specific(code, devices):
                foreign[(obj.family, code.name)] = foreign.get((obj.family, code.name), 0) + 1
        verdicts = {dev: cc.best(obj.codes, dev) for dev in devices}
        for dev, how in verdicts.items():
            counts = row.verdicts.setdefault(_device_name(dev), {NATIVE: 0, JIT: 0, NONE: 0})
            counts[how] += 1
        if all(how == NONE for how in verdicts.values()):
            if (allowed := _accepted(obj, None, NONE, allowances)) is not None:
                row.accepted = allowed.reason
                continue
            dead.append(obj.name)
            dead_by_family[obj.family] = dead_by_family.get(obj.family, 0) + 1
            continue
        for dev, how in verdicts.items():
            if how != JIT:
                continue
            allowed = _accepted(obj, dev, JIT, allowances)
            if allowed is None:
                jit_bad[(obj.family, _device_name(dev))] = jit_bad.get((obj.family, _device_name(dev)), 0) + 1
            else:
                row.accepted = allowed.reason
    for family, n in sorted(dead_by_family.items()):
        codes = ", ".join(sorted(rows[family].sass | rows[family].ptx))
        what = (f"carry only {codes}" if codes else
                # No -gencode at all: nvcc falls back to its default arch (sm_75 for CUDA 13), as
                # FlashAttention 3's objects do when FA3_ARCHS comes out empty.
                "have no -gencode flags (nvcc's default arch)")
        errors.append(f"{family}: {n} object(s) {what}, which no device of the release "
                      f"({', '.join(map(_device_name, devices))}) can load")
    for (family, dev), n in sorted(jit_bad.items()):
        errors.append(f"{family}: {n} object(s) have only PTX for {dev} (JIT-compiled at first use, not native); "
                      "fix the arch flags, or declare the family an accepted JIT fallback with its reason")
    for (family, code), n in sorted(foreign.items()):
        warnings.append(f"{family}: {n} object(s) carry {code}, arch-specific code for a device outside the release")
    return DeviceCodePlan(devices, list(objects), sorted(rows.values(), key=lambda r: r.family),
                          errors, warnings, dead)


def _accepted(obj: CudaObject, dev: tuple[int, int] | None, verdict: str,
              allowances: Sequence[Allowance]) -> Allowance | None:
    for a in allowances:
        if (a.verdict == verdict and fnmatch.fnmatchcase(obj.name, a.match)
                and (dev is None or not a.devices or _device_name(dev) in a.devices)):
            return a
    return None


def allowances_from(table: Mapping[str, Any], where: str) -> list[Allowance]:
    """The [[jit_fallback]] and [[no_device_code]] entries of a recipe data file."""
    out = []
    for key, verdict in (("jit_fallback", JIT), ("no_device_code", NONE)):
        for i, entry in enumerate(table.get(key, [])):
            if not entry.get("match") or not entry.get("reason"):
                raise InputError(f"{where}: {key}[{i}] needs both `match` and `reason`")
            out.append(Allowance(entry["match"], entry["reason"], tuple(entry.get("devices", ())), verdict))
    return out


def render(plan: DeviceCodePlan) -> str:
    """The device-code table as text: one line per family, then the policy's findings."""
    devs = [_device_name(d) for d in plan.devices]
    header = ["family", "objects", "SASS", "PTX"] + [f"on {d}" for d in devs]
    lines = [header]
    for r in plan.rows:
        cells = [r.family, str(r.objects), ",".join(sorted(r.sass)) or "-", ",".join(sorted(r.ptx)) or "-"]
        for d in devs:
            v = r.verdicts.get(d, {})
            parts = [f"{v[k]} {k}" for k in (NATIVE, JIT, NONE) if v.get(k)]
            cells.append(", ".join(parts) + (" (accepted)" if r.accepted and (v.get(JIT) or v.get(NONE)) else ""))
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    totals = {d: {k: sum(r.verdicts.get(d, {}).get(k, 0) for r in plan.rows) for k in (NATIVE, JIT, NONE)}
              for d in devs}
    out.append(f"{len(plan.objects)} CUDA objects; " + "; ".join(
        f"on {d}: {t[NATIVE]} native, {t[JIT]} JIT only, {t[NONE]} not loadable" for d, t in totals.items()))
    out += [f"error: {e}" for e in plan.errors] + [f"warning: {w}" for w in plan.warnings]
    return "\n".join(out)
