"""The closure check: every shared library an ELF file in the image needs is found in the image.

It reads the image's file system as a stream (`docker export` piped into tarfile, one pass; no
file but an ELF one is read past its first four bytes, the rest only skipped, and no tar is
written) and resolves each DT_NEEDED the way the dynamic
loader would: DT_RPATH (when there is no DT_RUNPATH), LD_LIBRARY_PATH of the image's ENV,
DT_RUNPATH, the directories of /etc/ld.so.conf (and its includes), then the default directories,
with $ORIGIN expanded and symbolic links followed inside the image. Libraries the NVIDIA container
runtime injects from the host (assemble/data/host_libraries.toml) count as found.

A package that ships alternative builds of one library (torchcodec: one per FFmpeg major, loaded
by trying each) declares them as a variant set (assemble/data/system_libraries.toml `variants`):
the image passes when the files of at least one variant resolve through the loader's search path;
the others are noted, not failed.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from wheelfactory.cuda.elfmachine import describe
from wheelfactory.pipeline.repair import ELF_MAGIC

from .datafiles import load_data

# Libraries whose symbols are resolved as well as their names (what `ldd -r` does), with the
# pattern of the symbols that are theirs: NCCL is the library the factory swaps under official
# wheels (torch, vLLM), and an older NCCL than the one they were built against loads, then fails
# at `import torch` with `undefined symbol: ncclRecv`.
SYMBOL_CHECKED = {"libnccl.so*": re.compile(r"^p?nccl[A-Z]")}
SYMBOLS = re.compile("|".join(f"(?:{p.pattern})" for p in SYMBOL_CHECKED.values()))
# One copy per image: two libnccl files mean torch and vLLM may load different NCCLs in one process.
ONE_COPY = ("libnccl.so*",)
# Configuration files that change a library's behaviour behind the image's back (a stray
# /etc/nccl.conf froze vLLM's warm-up upstream): none may be in an image.
FORBIDDEN_FILES = {"/etc/nccl.conf": "NCCL reads it at every start and overrides the environment's NCCL_* settings"}
DEFAULT_DIRS = ("/lib", "/usr/lib")
DEFAULT_DIRS_64 = ("/lib64", "/usr/lib64")


@dataclass(frozen=True)
class ElfObject:
    """What the loader needs to know about one ELF file."""

    path: str
    machine: str
    elfclass: int
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str | None
    undefined: frozenset[str] = frozenset()  # undefined, non-weak dynamic symbols
    defined: frozenset[str] = frozenset()  # dynamic symbols it exports


@dataclass(frozen=True)
class Finding:
    """A DT_NEEDED the check could not satisfy from the loader's search path."""

    path: str
    needed: str
    detail: str
    # found in the image, but not where the loader looks (at `elsewhere`): a warning for a plain
    # object, and for a variant no proof that it resolves (see accept_variants)
    off_path: bool = False
    elsewhere: str = ""

    def __str__(self) -> str:
        return f"{self.path}: needs {self.needed}: {self.detail}"


@dataclass
class ClosureReport:
    """Errors fail the image; warnings are reported."""

    checked: int = 0
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how each variant set was decided

    @property
    def ok(self) -> bool:
        return not self.errors


def host_libraries(data: Mapping[str, object] | None = None) -> tuple[set[str], dict[str, str]]:
    """(libraries injected from the host, optional-plugin globs -> why) from host_libraries.toml."""
    data = load_data("host_libraries") if data is None else data
    return set(data.get("injected", ())), dict(data.get("optional", {}))  # type: ignore[arg-type]


def _image_path(name: str) -> str:
    """A tar member's name as an absolute image path ('./usr/lib/x.so' -> '/usr/lib/x.so')."""
    name = name[2:] if name.startswith("./") else name
    return posixpath.normpath("/" + name.lstrip("/"))


# ELF files above this size are spooled to a temporary file while pyelftools reads them (it needs to
# seek: the dynamic section of a CUDA library sits after hundreds of MB of code); below, in memory.
# Either way one file at a time: the image's files are never all on disk.
SPOOL_BYTES = 256 << 20
# Text files the check reads besides the ELF objects: the loader's configuration.
CONF_PREFIX = "/etc/ld.so.conf"


class ImageTree:
    """An image's file system read once, in order, from a tar: `docker export` piped into
    `tarfile.open(mode="r|")` (Docker.exported) or a tar file. It keeps every entry's metadata, the
    facts of each ELF object (its bytes are read to parse it, then dropped) and the texts of the
    loader's configuration (/etc/ld.so.conf*); symbolic links are resolved inside it."""

    def __init__(self, tar: tarfile.TarFile):
        self.entries: dict[str, tarfile.TarInfo] = {}
        self.children: dict[str, list[str]] = {}
        self.objects: dict[str, ElfObject] = {}
        self.texts: dict[str, bytes] = {}
        hardlinks: list[tuple[str, str]] = []
        for m in tar:  # one pass: a stream cannot go back
            path = _image_path(m.name)
            self.entries[path] = m
            self._add_parents(path)
            if m.isfile():
                f = tar.extractfile(m)
                if f is None:
                    continue
                if path.startswith(CONF_PREFIX):
                    self.texts[path] = f.read()
                elif m.size >= 52:  # the smallest ELF header
                    obj = read_elf(f, path, SYMBOLS)
                    if obj is not None:
                        self.objects[path] = obj
            elif m.islnk():  # a hard link names an earlier member, whose bytes it shares
                hardlinks.append((path, _image_path(m.linkname)))
        for path, target in hardlinks:
            if target in self.objects:
                self.objects[path] = replace(self.objects[target], path=path)
            elif target in self.texts:
                self.texts[path] = self.texts[target]

    def _add_parents(self, path: str) -> None:
        while path != "/":  # parents count as directories even when the tar lists no entry for them
            parent = posixpath.dirname(path)
            siblings = self.children.setdefault(parent, [])
            known = bool(siblings)
            siblings.append(posixpath.basename(path))
            if known:
                break
            path = parent

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """The path with every symbolic link followed, or None when it leads nowhere in the image."""
        if depth > 40:
            return None
        parts = [p for p in posixpath.normpath(path).split("/") if p]
        cur = "/"
        for i, part in enumerate(parts):
            nxt = posixpath.normpath(posixpath.join(cur, part))
            m = self.entries.get(nxt)
            if m is None:
                if nxt not in self.children:
                    return None
                cur = nxt  # an implied directory
                continue
            if m.issym():
                target = m.linkname if m.linkname.startswith("/") else posixpath.join(cur, m.linkname)
                rest = "/".join(parts[i + 1:])
                return self.resolve(posixpath.join(target, rest) if rest else target, depth + 1)
            cur = nxt
        return cur

    def is_file(self, path: str) -> bool:
        m = self.entries.get(path)
        return m is not None and (m.isfile() or m.islnk())

    def text(self, path: str) -> str | None:
        """A configuration file's text (only /etc/ld.so.conf* files are kept), or None."""
        data = self.texts.get(path)
        return None if data is None else data.decode(errors="replace")

    def glob(self, pattern: str) -> list[str]:
        """Files matching a glob whose wildcards are in the last component only (ld.so.conf includes)."""
        d, base = posixpath.split(pattern)
        real = self.resolve(d)
        if real is None:
            return []
        return sorted(posixpath.join(real, n) for n in self.children.get(real, []) if fnmatch.fnmatch(n, base))


def read_elf(f: IO[bytes], path: str, symbols: re.Pattern[str] | None = None) -> ElfObject | None:
    """The ELF facts of a file read from `f` forward only (a member of a streamed tar), or None when
    it is no loadable ELF object; with `symbols`, its dynamic symbols whose names match (undefined
    and defined). Only ELF files are read past their first four bytes."""
    head = f.read(4)
    if head != ELF_MAGIC:
        return None  # tarfile skips the rest of the member without keeping it
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        spool.write(head)
        shutil.copyfileobj(f, spool, 1 << 20)
        spool.seek(0)
        return _parse_elf(spool, path, symbols)  # type: ignore[arg-type]


def _parse_elf(f: IO[bytes], path: str, symbols: re.Pattern[str] | None) -> ElfObject | None:
    try:
        elf = ELFFile(f)
        if elf["e_type"] not in ("ET_DYN", "ET_EXEC"):
            return None
        needed: list[str] = []
        rpath: list[str] = []
        runpath: list[str] = []
        soname = None
        undefined: set[str] = set()
        defined: set[str] = set()
        dynsym = None
        for section in elf.iter_sections():
            if isinstance(section, SymbolTableSection) and section.name == ".dynsym":
                dynsym = section
            if not isinstance(section, DynamicSection):
                continue
            for tag in section.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    needed.append(tag.needed)
                elif tag.entry.d_tag == "DT_RPATH":
                    rpath += tag.rpath.split(":")
                elif tag.entry.d_tag == "DT_RUNPATH":
                    runpath += tag.runpath.split(":")
                elif tag.entry.d_tag == "DT_SONAME":
                    soname = tag.soname
        # symbols only of the objects that link a symbol-checked library or are one: reading every
        # symbol table of a CUDA stack would cost minutes
        names = [*needed, soname or "", posixpath.basename(path)]
        if symbols is not None and dynsym is not None and \
                any(fnmatch.fnmatch(n, g) for n in names for g in SYMBOL_CHECKED):
            for sym in dynsym.iter_symbols():
                if not sym.name or sym["st_info"]["bind"] == "STB_LOCAL" or not symbols.match(sym.name):
                    continue
                if sym["st_shndx"] == "SHN_UNDEF":
                    if sym["st_info"]["bind"] != "STB_WEAK":
                        undefined.add(sym.name)
                else:
                    defined.add(sym.name)
        return ElfObject(path, elf["e_machine"], elf.elfclass, tuple(needed), tuple(rpath), tuple(runpath), soname,
                         frozenset(undefined), frozenset(defined))
    except (ELFError, ValueError, KeyError, OSError, AssertionError):
        return None


def ld_so_conf_dirs(tree: ImageTree, conf: str = "/etc/ld.so.conf", depth: int = 0) -> list[str]:
    """Directories of /etc/ld.so.conf, following `include` lines."""
    real = tree.resolve(conf)
    text = tree.text(real) if real is not None and depth <= 10 else None
    if text is None:
        return []
    dirs: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include"):
            for pattern in line.split()[1:]:
                pattern = pattern if pattern.startswith("/") else posixpath.join(posixpath.dirname(conf), pattern)
                for inc in tree.glob(pattern):
                    dirs += ld_so_conf_dirs(tree, inc, depth + 1)
        else:
            dirs.append(line)
    return dirs


def _expand(entries: Iterable[str], origin: str) -> list[str]:
    out = []
    for e in entries:
        if not e:
            continue
        e = e.replace("${ORIGIN}", origin).replace("$ORIGIN", origin).replace("${LIB}", "lib").replace("$LIB", "lib")
        out.append(posixpath.normpath(e if e.startswith("/") else posixpath.join(origin, e)))
    return out


def check_tree(tree: ImageTree, env: Mapping[str, str], injected: set[str], optional: Mapping[str, str],
               only_under: Sequence[str] = (), variants: Mapping[str, re.Pattern[str]] | None = None) -> ClosureReport:
    """Check every ELF object of the image (or those under `only_under`) against the image.

    `variants`: name -> a pattern over ELF paths whose first group names the variant of a set of
    alternatives; one variant whose files all resolve suffices (see `accept_variants`)."""
    objects = tree.objects
    by_name: dict[str, list[str]] = {}
    for obj in objects.values():
        by_name.setdefault(posixpath.basename(obj.path), []).append(obj.path)
        if obj.soname:
            by_name.setdefault(obj.soname, []).append(obj.path)
    sh = tree.resolve("/bin/sh")
    machine = objects[sh].machine if sh in objects else None
    ld_library_path = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]
    system = ld_so_conf_dirs(tree) + list(DEFAULT_DIRS)
    report = ClosureReport()
    foreign: list[ElfObject] = []
    for obj in sorted(objects.values(), key=lambda o: o.path):
        if only_under and not any(obj.path.startswith(p.rstrip("/") + "/") for p in only_under):
            continue
        if machine and obj.machine != machine:
            foreign.append(obj)  # a file for another architecture (e.g. a cross tool's payload): never loaded here
            continue
        report.checked += 1
        origin = posixpath.dirname(obj.path)
        dirs = (_expand(obj.rpath, origin) if not obj.runpath else []) + ld_library_path + \
            _expand(obj.runpath, origin) + system + (list(DEFAULT_DIRS_64) if obj.elfclass == 64 else [])
        for needed in obj.needed:
            if needed in injected:
                continue
            found = _find(tree, objects, obj, needed, dirs)
            if found:
                missing = _missing_symbols(obj, objects[found], needed)
                if missing:
                    report.errors.append(Finding(obj.path, needed, (
                        f"resolves to {found}, which lacks {len(missing)} symbol(s) it needs: "
                        f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} (an older build than the one "
                        "it was linked against; `import` fails with `undefined symbol`)")))
                continue
            why = next((w for g, w in optional.items() if fnmatch.fnmatch(obj.path, g)), None)
            elsewhere = [p for p in by_name.get(needed, []) if objects[p].machine == obj.machine]
            if why:
                report.warnings.append(Finding(obj.path, needed, f"not in the image; optional plugin ({why})"))
            elif elsewhere:
                report.warnings.append(Finding(obj.path, needed, f"only at {elsewhere[0]}, off the loader's search "
                                               "path: works only when a library loaded earlier (e.g. by "
                                               "`import torch`) provides it", off_path=True,
                                               elsewhere=elsewhere[0]))
            else:
                report.errors.append(Finding(obj.path, needed, "found nowhere in the image"))
    _one_copy_and_forbidden(tree, objects, machine, report)
    checked_paths = [o.path for o in objects.values()
                     if (not only_under or any(o.path.startswith(p.rstrip("/") + "/") for p in only_under))
                     and not (machine and o.machine != machine)]
    for name, pattern in sorted((variants or {}).items()):
        accept_variants(report, name, pattern, checked_paths)
    if foreign:
        # Said, not failed: an arm64 image holding x86-64 files (or the reverse) usually means a wheel of the
        # wrong machine, which the wheelhouse already refuses; what is left is payload never loaded here.
        first = foreign[0]
        report.notes.append(f"{len(foreign)} ELF file(s) built for another machine than the image's "
                            f"{describe(machine or '')} (/bin/sh), not checked: e.g. {first.path} "
                            f"({describe(first.machine)})")
    return report


def _variant_key(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 30, v)


def accept_variants(report: ClosureReport, name: str, pattern: re.Pattern[str], paths: Iterable[str]) -> None:
    """Decide one variant set: a variant resolves when the loader's search path finds the libraries
    its files need (RPATH/RUNPATH/$ORIGIN, the image's LD_LIBRARY_PATH, ld.so.conf, the system dirs).
    A same-named file elsewhere in the image does not count (PyNvVideoCodec's bundled FFmpeg 8 is not
    what torchcodec's FFmpeg 8 variant loads), except the two a package's loader provides itself: a
    file of the same variant (custom_ops6 needs core6, loaded first) and a library every variant
    needs (libtorch.so, there once `import torch` ran). When some variant resolves, the findings of
    the others leave the report (alternatives never loaded); when none does, their errors stand and
    their off-path findings become errors. A note says which."""
    members: dict[str, str] = {}
    for path in paths:
        if (m := pattern.search(path)) is not None:
            members[path] = m.group(1)
    if not members:
        return
    variants = sorted(set(members.values()), key=_variant_key)
    off_path = [w for w in report.warnings if w.off_path and w.path in members]
    needs: dict[str, set[str]] = {v: set() for v in variants}
    for w in off_path:
        needs[members[w.path]].add(w.needed)
    common = set.intersection(*needs.values())  # e.g. libtorch.so, off the path for every variant alike

    def provided(w: Finding) -> bool:
        own = pattern.search(w.elsewhere)
        return (own is not None and own.group(1) == members[w.path]) or w.needed in common

    unproven = [w for w in off_path if not provided(w)]
    failing: dict[str, list[Finding]] = {v: [] for v in variants}
    for e in [*report.errors, *unproven]:
        if e.path in members:
            failing[members[e.path]].append(e)
    ok = [v for v in variants if not failing[v]]
    if not ok:
        report.warnings = [w for w in report.warnings if w not in unproven]
        report.errors += [replace(w, detail=f"{w.detail}; a variant counts only when the loader's search path "
                                  "finds its libraries", off_path=False) for w in unproven]
        report.notes.append(f"{name}: none of its variants {', '.join(variants)} resolves through the loader's "
                            "search path (any one would do); its errors stand")
        return
    missing = sorted({e.needed for v in variants for e in failing[v]})
    report.errors = [e for e in report.errors if e.path not in members]
    report.warnings = [w for w in report.warnings if w not in unproven]
    others = [v for v in variants if failing[v]]
    note = f"{name}: variant {', '.join(ok)} of {', '.join(variants)} resolves"
    if others:
        note += (f"; variants {', '.join(others)} do not ({len(missing)} libraries not on the loader's search "
                 f"path, e.g. {', '.join(missing[:3])}) and are accepted as unused alternatives")
    report.notes.append(note)


def _find(tree: ImageTree, objects: Mapping[str, ElfObject], obj: ElfObject, needed: str,
          dirs: list[str]) -> str | None:
    """The image path the loader would load for `needed`, or None."""
    candidates = [needed] if "/" in needed else [posixpath.join(d, needed) for d in dirs]
    for c in candidates:
        real = tree.resolve(c)
        if real is not None and real in objects:
            lib = objects[real]
            if lib.machine == obj.machine and lib.elfclass == obj.elfclass:
                return real
    return None


def _missing_symbols(obj: ElfObject, lib: ElfObject, needed: str) -> list[str]:
    """The symbols of a symbol-checked library (SYMBOL_CHECKED) that `obj` needs and `lib` lacks."""
    for glob, pattern in SYMBOL_CHECKED.items():
        if fnmatch.fnmatch(needed, glob):
            return sorted(s for s in obj.undefined if pattern.match(s) and s not in lib.defined)
    return []


def _one_copy_and_forbidden(tree: ImageTree, objects: Mapping[str, ElfObject], machine: str | None,
                            report: ClosureReport) -> None:
    """Errors for a second copy of a one-copy library (ONE_COPY) and for a forbidden file (FORBIDDEN_FILES)."""
    for glob in ONE_COPY:
        copies = sorted(p for p, o in objects.items() if fnmatch.fnmatch(posixpath.basename(p), glob)
                        and tree.entries[p].isfile() and not (machine and o.machine != machine))
        for extra in copies[1:]:
            report.errors.append(Finding(extra, glob.rstrip("*"), (
                f"a second copy (besides {copies[0]}): exactly one may be in an image, so that every "
                "library that links it (torch, vLLM) loads the same one")))
    for path, why in FORBIDDEN_FILES.items():
        if tree.resolve(path) is not None and tree.is_file(tree.resolve(path) or path):
            report.errors.append(Finding(path, posixpath.basename(path), f"must not be in an image: {why}"))


def check_stream(tar: tarfile.TarFile, env: Mapping[str, str], only_under: Sequence[str] = (),
                 variants: Mapping[str, re.Pattern[str]] | None = None) -> ClosureReport:
    """Check an image file system read from a tar, streamed or not (Docker.exported: `docker export`
    piped in, nothing written), with the host-library data file (and variant sets)."""
    injected, optional = host_libraries()
    return check_tree(ImageTree(tar), env, injected, optional, only_under, variants)
