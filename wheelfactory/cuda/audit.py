"""Auditing a wheel's device code: which GPU code each shared object carries, and whether it fits.

`audit_wheel` reads every ELF shared object of a wheel straight out of the zip, one member at
a time (fatbin.py skips payloads, so a multi-GB libtorch_cuda.so costs a few KB of memory), and
records per object the bytes of device code per arch and the code set of each fatbin container.
`judge` holds that against a release's arch list with the rules of cuda_compat:

- native    every target device loads SASS of the object natively;
- jit-only  some device finds only PTX: it runs after the driver's JIT (minutes at first launch);
- none      some device finds no loadable code at all: its kernels fail with "no kernel image";
- foreign   arch-specific code (sm_XYa) for a GPU outside the list: sm_120a in a wheel for 12.1
            is dead weight, and usually means the build meant 12.1 and compiled for the wrong GPU.

An object is judged on all its code together, as a wheel for 9.0a;12.1a legitimately holds
Hopper-only kernels next to Blackwell ones. A container (module: one translation unit) without
native code for a device is still counted, as `gaps`: information, not a failure.

The audit's JSON form (`WheelAudit.to_json`) is what the wheelhouse manifest stores.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import FactoryError, InputError
from . import cuda_compat as cc
from . import fatbin
from .cuda_arch import devices_of

AUDIT_FORMAT = 1
NATIVE, JIT_ONLY, NONE = "native", "jit-only", "none"

_SHARED_OBJECT_RE = re.compile(r"\.so(\.\d+)*$")
_PROVENANCE_RE = re.compile(r"^[^/]+\.dist-info/wheelfactory\.json$")


class PolicyError(FactoryError):
    """A wheel contradicts the arch policy it was checked against (exit 1: the wheel is wrong, not the input)."""

    exit_code = 1


@dataclass(frozen=True)
class ObjectCode:
    """The device code of one shared object in a wheel."""

    path: str  # the member's path inside the wheel
    sizes: Mapping[str, int]  # arch as nvcc writes it ("sm_121a", "compute_80") -> bytes, uncompressed
    stored: int  # bytes the device code takes in the file (compressed where it is)
    modules: Mapping[str, int]  # a container's code set ("compute_121a sm_121a") -> number of containers

    @classmethod
    def from_entries(cls, path: str, entries: Iterable[fatbin.FatbinEntry]) -> ObjectCode:
        sizes: dict[str, int] = {}
        per_module: dict[int, set[str]] = {}
        stored = 0
        for e in entries:
            sizes[e.arch] = sizes.get(e.arch, 0) + e.size
            stored += e.stored_size
            per_module.setdefault(e.container, set()).add(e.arch)
        modules: dict[str, int] = {}
        for codes in per_module.values():
            key = " ".join(sorted(codes, key=arch_sort_key))
            modules[key] = modules.get(key, 0) + 1
        return cls(path, _sorted_archs(sizes), stored, dict(sorted(modules.items())))

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def loadable_codes(self) -> tuple[str, ...]:
        """The SASS and PTX of the object (LTO IR is not loadable by the runtime)."""
        return tuple(a for a in self.sizes if a.startswith(("sm_", "compute_")))

    def to_json(self) -> dict[str, Any]:
        return {"code": dict(self.sizes), "stored": self.stored, "modules": dict(self.modules)}

    @classmethod
    def from_json(cls, path: str, data: Mapping[str, Any]) -> ObjectCode:
        return cls(path, dict(data["code"]), int(data["stored"]), dict(data["modules"]))


@dataclass(frozen=True)
class WheelAudit:
    """The device code of every shared object of a wheel."""

    wheel: str  # the wheel's file name
    objects: tuple[ObjectCode, ...]  # shared objects with device code, by path
    plain_objects: int = 0  # shared objects without device code (host-only libraries)
    provenance: Any = None  # the wheel's .dist-info/wheelfactory.json, parsed, if it has one

    @property
    def totals(self) -> dict[str, int]:
        """arch -> bytes over all objects."""
        out: dict[str, int] = {}
        for o in self.objects:
            for arch, n in o.sizes.items():
                out[arch] = out.get(arch, 0) + n
        return _sorted_archs(out)

    def to_json(self) -> dict[str, Any]:
        """The manifest form: per object the bytes per arch, its stored bytes and container code sets."""
        return {
            "format": AUDIT_FORMAT,
            "objects": {o.path: o.to_json() for o in self.objects},
            "total": self.totals,
            "stored": sum(o.stored for o in self.objects),
            "plain_objects": self.plain_objects,
        }

    @classmethod
    def from_json(cls, wheel: str, data: Mapping[str, Any]) -> WheelAudit:
        if data.get("format") != AUDIT_FORMAT:
            raise InputError(f"{wheel}: device-code audit format {data.get('format')!r}, expected {AUDIT_FORMAT}")
        objects = tuple(ObjectCode.from_json(p, o) for p, o in sorted(data["objects"].items()))
        return cls(wheel, objects, int(data.get("plain_objects", 0)))


def arch_sort_key(arch: str) -> tuple[int, int, str, str]:
    """sm_80 < sm_90 < sm_90a < sm_100 < compute_80: SASS by number, then PTX, then anything else."""
    m = re.match(r"^(sm|compute|lto)_(\d+)([a-z]?)$", arch)
    if not m:
        return (9, 0, "", arch)
    return ({"sm": 0, "compute": 1, "lto": 2}[m[1]], int(m[2]), m[3], "")


def _sorted_archs(sizes: Mapping[str, int]) -> dict[str, int]:
    return {a: sizes[a] for a in sorted(sizes, key=arch_sort_key)}


def _is_shared_object(info: zipfile.ZipInfo) -> bool:
    return not info.is_dir() and bool(_SHARED_OBJECT_RE.search(info.filename))


def audit_wheel(path: Path) -> WheelAudit:
    """Read the device code of every shared object in a wheel; InputError if it is no readable wheel."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix != ".whl":
        raise InputError(f"{path}: not a wheel (expected a .whl file)")
    objects: list[ObjectCode] = []
    plain = 0
    provenance = None
    try:
        with zipfile.ZipFile(path) as zf:
            # A wheel has NAME-VERSION.dist-info/METADATA at its top (PEP 427); a zip without it
            # that is merely named .whl is not judged a wheel (it was once, with exit 0).
            if not any(n.count("/") == 1 and n.endswith(".dist-info/METADATA") for n in zf.namelist()):
                raise InputError(f"{path}: not a wheel: no NAME-VERSION.dist-info/METADATA in it")
            for info in zf.infolist():
                if _PROVENANCE_RE.match(info.filename):
                    provenance = _read_provenance(zf, info)
                if not _is_shared_object(info):
                    continue
                with zf.open(info) as member:  # streamed: fatbin.read_elf seeks and skips
                    entries = fatbin.read_elf(member, info.file_size, f"{path.name}:{info.filename}")
                if entries:
                    objects.append(ObjectCode.from_entries(info.filename, entries))
                else:
                    plain += 1
    except zipfile.BadZipFile as e:
        raise InputError(f"{path}: not a valid zip archive ({e}); is it a wheel?") from None
    except (zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise InputError(f"{path}: unreadable wheel ({e})") from None
    return WheelAudit(path.name, tuple(sorted(objects, key=lambda o: o.path)), plain, provenance)


def audit_path(path: Path) -> WheelAudit:
    """The device code of a wheel, of one shared object, or of every shared object under a
    directory (a JIT cache such as FlashInfer's, a build tree, an unpacked wheel); InputError for
    anything else. Object paths are relative to the directory."""
    path = Path(path)
    if path.is_dir():
        # links are skipped: libx.so -> libx.so.1 would count one object twice
        found = sorted(p for p in path.rglob("*")
                       if _SHARED_OBJECT_RE.search(p.name) and p.is_file() and not p.is_symlink())
        if not found:
            raise InputError(f"{path}: no shared objects (*.so, *.so.N) under this directory")
        return _audit_files(path.name or str(path), [(p.relative_to(path).as_posix(), p) for p in found])
    if path.is_file() and path.suffix != ".whl" and _SHARED_OBJECT_RE.search(path.name):
        return _audit_files(path.name, [(path.name, path)])
    if path.exists() and path.suffix != ".whl":
        raise InputError(f"{path}: not a wheel, a shared object (*.so) or a directory of them")
    return audit_wheel(path)


def _audit_files(label: str, files: list[tuple[str, Path]]) -> WheelAudit:
    objects: list[ObjectCode] = []
    plain = 0
    for name, file in files:
        try:
            entries = fatbin.read_elf_path(file)
        except OSError as e:
            raise InputError(f"{file}: unreadable ({e.strerror or e})") from None
        if entries:
            objects.append(ObjectCode.from_entries(name, entries))
        else:
            plain += 1
    return WheelAudit(label, tuple(sorted(objects, key=lambda o: o.path)), plain, None)


def _read_provenance(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    """The parsed provenance file; its text when it is not JSON (shown as it is, not judged)."""
    text = zf.read(info).decode("utf-8", "replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# -- judging ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectVerdict:
    """How the devices of a target list run one shared object."""

    path: str
    status: str  # NATIVE, JIT_ONLY or NONE: the worst over the devices
    devices: Mapping[str, str]  # "12.1" -> cuda_compat's "native", "jit" or "none"
    foreign: tuple[str, ...]  # arch-specific code that no target device loads
    # device -> containers it cannot load natively although the object as a whole is native there
    gaps: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == NATIVE and not self.foreign

    def problems(self) -> list[str]:
        """What contradicts the policy, in words."""
        out = []
        for device, how in self.devices.items():
            if how == cc.NONE:
                out.append(f"no loadable code for {device}")
            elif how == cc.JIT:
                out.append(f"only PTX (JIT) for {device}")
        if self.foreign:
            out.append(f"foreign arch-specific code {', '.join(self.foreign)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "devices": dict(self.devices), "foreign": list(self.foreign),
                "gaps": dict(self.gaps), "ok": self.ok}


@dataclass(frozen=True)
class Verdict:
    """A wheel's objects judged against a target arch list."""

    targets: tuple[str, ...]
    devices: tuple[str, ...]  # "12.1", ... in the order of the targets
    objects: tuple[ObjectVerdict, ...]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.objects)

    @property
    def failures(self) -> tuple[ObjectVerdict, ...]:
        return tuple(o for o in self.objects if not o.ok)

    def to_json(self) -> dict[str, Any]:
        return {"targets": list(self.targets), "devices": list(self.devices), "ok": self.ok,
                "objects": {o.path: o.to_json() for o in self.objects}}


def _device_label(dev: tuple[int, int]) -> str:
    return f"{dev[0]}.{dev[1]}"


def judge_object(obj: ObjectCode, devices: Sequence[tuple[int, int]]) -> ObjectVerdict:
    codes = obj.loadable_codes
    per_device = {_device_label(d): cc.best(codes, d) for d in devices}
    status = NONE if cc.NONE in per_device.values() else JIT_ONLY if cc.JIT in per_device.values() else NATIVE
    foreign = tuple(c for c in codes if cc.is_foreign_specific(c, devices))
    gaps: dict[str, int] = {}
    for d in devices:
        if per_device[_device_label(d)] != cc.NATIVE:
            continue  # already a failure of the object as a whole
        missing = sum(n for key, n in obj.modules.items()
                      if cc.best([c for c in key.split() if c.startswith(("sm_", "compute_"))], d) != cc.NATIVE)
        if missing:
            gaps[_device_label(d)] = missing
    return ObjectVerdict(obj.path, status, per_device, foreign, gaps)


def target_devices(targets: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """The devices of a target arch list ("9.0a", "12.1a" or "9.0a;12.1a"); InputError if it is bad or empty."""
    try:
        return devices_of(targets)
    except InputError as e:
        raise InputError(f"target arch list {';'.join(targets)!r}: {e}") from None


def judge(audit: WheelAudit, targets: Sequence[str]) -> Verdict:
    """Judge every object with device code against a target arch list such as ("9.0a", "12.1a")."""
    devices = target_devices(targets)
    return Verdict(tuple(targets), tuple(_device_label(d) for d in devices),
                   tuple(judge_object(o, devices) for o in audit.objects))


# -- rendering ----------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    """1536 -> '1.5K'; sizes of device code span bytes to gigabytes."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


def _table(rows: list[list[str]], right_from: int = 1) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out


def _provenance_lines(prov: Any) -> list[str]:
    """The factory's own record (wheelfactory.pipeline.provenance, format 1) as a few readable lines; the
    key's full inputs are long, and `inspect --json` has them. Anything else is shown as it is."""
    if not (isinstance(prov, dict) and prov.get("format") == 1 and "key" in prov):
        return [f"  provenance: {prov if isinstance(prov, str) else json.dumps(prov, sort_keys=True)}"]
    tools = ", ".join(f"{k} {v}" for k, v in sorted((prov.get("toolchain") or {}).items()) if v)
    return [f"  provenance: {prov.get('component')} {prov.get('version')} built by {prov.get('tool')}, "
            f"key {prov['key']}",
            f"    source: {json.dumps(prov.get('source'), sort_keys=True)}",
            f"    toolchain: {tools or 'not recorded'}",
            "    (every input of the key: wheelfactory inspect --json)"]


def render(audit: WheelAudit, verdict: Verdict | None = None) -> str:
    """A table of one wheel: per shared object the bytes per arch, and the verdict per device."""
    lines = [f"{audit.wheel}: {len(audit.objects)} shared object(s) with device code, "
             f"{audit.plain_objects} without"]
    if audit.provenance is not None:
        lines += _provenance_lines(audit.provenance)
    if not audit.objects:
        return "\n".join(lines)
    archs = list(audit.totals)
    by_path = {v.path: v for v in verdict.objects} if verdict else {}
    header = ["shared object", *archs, "total"]
    if verdict:
        header += [f"on {d}" for d in verdict.devices] + ["foreign"]
    rows = [header]
    for o in audit.objects:
        row = [o.path, *(human_bytes(o.sizes[a]) if a in o.sizes else "-" for a in archs), human_bytes(o.total)]
        if verdict:
            v = by_path[o.path]
            row += [v.devices[d] for d in verdict.devices] + [" ".join(v.foreign) or "-"]
        rows.append(row)
    totals = audit.totals
    stored = sum(o.stored for o in audit.objects)
    rows.append(["total", *(human_bytes(totals[a]) for a in archs), human_bytes(sum(totals.values()))]
                + ([""] * (len(verdict.devices) + 1) if verdict else []))
    lines += ["  " + line for line in _table(rows)]
    lines.append(f"  device code stored in the objects: {human_bytes(stored)} "
                 f"({human_bytes(sum(totals.values()))} uncompressed)")
    if verdict:
        lines += ["  " + line for line in render_verdict(verdict).splitlines()]
    return "\n".join(lines)


def render_verdict(verdict: Verdict) -> str:
    targets = ";".join(verdict.targets)
    fails = verdict.failures
    if not fails:
        lines = [f"verdict for {targets}: OK, every object loads natively on {', '.join(verdict.devices)}"]
    else:
        lines = [f"verdict for {targets}: {len(fails)} of {len(verdict.objects)} object(s) contradict the policy"]
        lines += [f"  {v.path}: {'; '.join(v.problems())}" for v in fails]
    for v in verdict.objects:
        if v.gaps:
            gaps = ", ".join(f"{n} for {d}" for d, n in v.gaps.items())
            lines.append(f"  note: {v.path}: container(s) without native code ({gaps})")
    return "\n".join(lines)


def render_comparison(audits: Sequence[WheelAudit]) -> str:
    """Several wheels side by side: bytes per arch, one column per wheel."""
    archs = sorted({a for au in audits for a in au.totals}, key=arch_sort_key)
    names = [_short_name(au.wheel) for au in audits]
    if len(set(names)) < len(names):  # the same version twice (official and rebuilt): full names
        names = [au.wheel for au in audits]
    rows = [["arch", *names]]
    for a in archs:
        rows.append([a, *(human_bytes(au.totals[a]) if a in au.totals else "-" for au in audits)])
    rows.append(["total", *(human_bytes(sum(au.totals.values())) for au in audits)])
    rows.append(["objects", *(str(len(au.objects)) for au in audits)])
    return "\n".join(["device code side by side:"] + ["  " + line for line in _table(rows)])


def _short_name(wheel: str) -> str:
    """'torch-2.10.0+cu130-cp312-...whl' -> 'torch-2.10.0+cu130': the distribution and version."""
    parts = wheel.removesuffix(".whl").split("-")
    return "-".join(parts[:2]) if len(parts) >= 5 else wheel
