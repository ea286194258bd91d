"""The NCCL floor of a lock: no NCCL older than the one the locked torch was built against.

Swapping NCCL under an official torch is what a release with a factory NCCL does (it overrides
torch's `nvidia-nccl-cu13==x.y.z`). An older NCCL passes resolution, installation and the
assembler's checks, then `import torch` fails with `libtorch_cuda.so: undefined symbol: ncclRecv`
(measured with an NCCL lacking the point-to-point API). So `lock` refuses it, naming the symbols:

* the NCCL symbols torch's CUDA library imports (undefined `nccl*` in `torch/lib/libtorch_cuda.so`)
  that the locked libnccl does not export: what fails at import;
* when the wheel of the NCCL torch pins is in the wheelhouse, the symbols that NCCL exports and the
  locked one lacks: what a newer torch code path may call.

Symbols are read from the ELF dynamic symbol tables with pyelftools (what `nm -D` prints), from
the two wheels' members, extracted to a temporary directory only when the versions say the locked
NCCL is older.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..core.errors import BuildError
from ..store.wheelmeta import read_wheel

NCCL_DIST = re.compile(r"nvidia-nccl-cu\d+")
LIBNCCL = re.compile(r"(^|/)lib/libnccl\.so(\.\d+)*$")
# the torch library that links libnccl (ProcessGroupNCCL lives in it)
TORCH_NCCL_USER = "torch/lib/libtorch_cuda.so"
NCCL_SYMBOL = re.compile(r"p?nccl[A-Z]\w*")  # NCCL's API and its profiling aliases (pncclSend)
SHOWN = 20  # symbols named in a message; the rest are counted


def torch_nccl_pin(requires_dist: Iterable[str]) -> tuple[str, Version] | None:
    """(NCCL distribution, version) that torch's METADATA pins with `==`, or None (a CPU torch)."""
    for text in requires_dist:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if not NCCL_DIST.fullmatch(canonicalize_name(req.name)):
            continue
        for spec in req.specifier:
            if spec.operator in ("==", "==="):
                try:
                    return canonicalize_name(req.name), Version(spec.version)
                except InvalidVersion:
                    continue
    return None


def dynamic_symbols(path: Path) -> tuple[set[str], set[str]]:
    """(exported, imported) names of an ELF file's dynamic symbol table (global and weak)."""
    exported, imported = set(), set()
    try:
        with open(path, "rb") as f:
            dynsym = ELFFile(f).get_section_by_name(".dynsym")
            for sym in dynsym.iter_symbols() if dynsym is not None else ():
                if not sym.name or sym["st_info"]["bind"] == "STB_LOCAL":
                    continue
                (imported if sym["st_shndx"] == "SHN_UNDEF" else exported).add(sym.name)
    except (ELFError, OSError) as e:
        raise BuildError(f"{path}: cannot read its dynamic symbols ({e})") from None
    return exported, imported


def _extract(wheel: Path, wanted: re.Pattern[str] | str, dest: Path) -> Path | None:
    """The first member of `wheel` whose name matches (or equals) `wanted`, extracted under dest."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if (name == wanted) if isinstance(wanted, str) else wanted.search(name):
                target = dest / wheel.name / Path(name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                return target
    return None


def _reference_wheel(wheel_dir: Path, dist: str, version: Version) -> Path | None:
    """A wheel of dist==version in the wheelhouse, if one is there."""
    for path in sorted(wheel_dir.glob("*.whl")):
        try:
            name, ver, _, _ = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if name == dist and ver == version:
            return path
    return None


def _names(symbols: Iterable[str]) -> str:
    ordered = sorted(symbols)
    more = f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else ""
    return ", ".join(ordered[:SHOWN]) + more


def check_nccl_floor(release: str, locked: Iterable[tuple[str, str, str]], wheel_dir: Path) -> None:
    """BuildError when the locked NCCL is older than the one the locked torch pins.

    `locked`: (canonical name, version, wheel file name) of every locked package, the files in
    wheel_dir."""
    files = {name: (version, filename) for name, version, filename in locked}
    if "torch" not in files:
        return
    torch_version, torch_file = files["torch"]
    pin = torch_nccl_pin(read_wheel(wheel_dir / torch_file).requires_dist)
    if pin is None or pin[0] not in files:
        return
    dist, floor = pin
    nccl_version, nccl_file = files[dist]
    if Version(nccl_version).release >= floor.release:
        return
    with tempfile.TemporaryDirectory(prefix="nccl-floor-") as tmp:
        work = Path(tmp)
        lib = _extract(wheel_dir / nccl_file, LIBNCCL, work)
        if lib is None:
            raise BuildError(f"release {release!r}: {nccl_file} holds no lib/libnccl.so*")
        have, _ = dynamic_symbols(lib)
        user = _extract(wheel_dir / torch_file, TORCH_NCCL_USER, work)
        needed = {s for s in dynamic_symbols(user)[1] if NCCL_SYMBOL.fullmatch(s)} if user else set()
        reference = _reference_wheel(wheel_dir, dist, floor)
        ref_lib = _extract(reference, LIBNCCL, work) if reference else None
        newer = {s for s in dynamic_symbols(ref_lib)[0] if NCCL_SYMBOL.fullmatch(s)} if ref_lib else None
    lacks = needed - have
    parts = [f"release {release!r}: {dist} {nccl_version} ({nccl_file}) is older than the {dist} {floor} "
             f"that torch {torch_version} was built against (torch's METADATA: Requires-Dist: {dist}=={floor})"]
    if user is None:
        parts.append(f"{torch_file} has no {TORCH_NCCL_USER} to read the NCCL symbols torch calls")
    elif lacks:
        parts.append(f"its libnccl lacks {len(lacks)} symbol(s) that {TORCH_NCCL_USER} imports: {_names(lacks)} "
                     "(`import torch` fails with `undefined symbol`)")
    else:
        parts.append(f"its libnccl exports all {len(needed)} NCCL symbols {TORCH_NCCL_USER} imports")
    if newer is not None:
        gone = newer - have
        parts.append(f"of the {len(newer)} NCCL symbols {reference.name} exports it lacks {len(gone)}"
                     + (f": {_names(gone)}" if gone else ""))
    else:
        parts.append(f"(no {dist} {floor} wheel in {wheel_dir} to compare all exported symbols with)")
    parts.append(f"build NCCL {floor} or newer for this release, or adopt a torch built against {nccl_version}")
    raise BuildError("; ".join(parts))
