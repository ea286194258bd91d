"""Reading the CUDA device code that an ELF file (shared object, executable, object) carries.

nvcc embeds device code as *fatbin containers* in the ELF section `.nv_fatbin` (one container per
translation unit or device link: a module the CUDA runtime loads as a whole), or `__nv_relfatbin`
for relocatable device code (-rdc) that still has to be device-linked. No NVIDIA document
describes the layout; it was worked out from nvcc 12.x/13.0 output and checked field by field
against `cuobjdump -all -elf -ptx` (tests/data/fatbin/ holds the fixtures and cuobjdump's view):

  container header, 16 bytes, little-endian:
    u32 magic 0xBA55ED50 | u16 version (1) | u16 header size (16) | u64 size of the entries that follow
  entry header, `header size` bytes (64; 80/96/112/120 with an options block on CUDA 12.8+):
    0  u16 kind           1 PTX, 2 ELF (a cubin: SASS), 8 NVVM IR for LTO (-gencode code=lto_XY)
    2  u16 (0x0101)
    4  u32 header size    the payload starts right after the header
    8  u64 payload size   the bytes stored, padded to a multiple of 8; the next entry follows
    16 u32 compressed size  exact stored size of a compressed payload (0 when not compressed)
    20 u32 options offset   0x40 when an options block follows the 64 fixed bytes, else 0
    24 u16 minor, u16 major  ELF ABI [1,7]/[1,8], PTX ISA [9,0], NVVM IR [1,65]
    28 u32 sm             the arch number: 80, 90, 121, ...
    40 u64 flags          0x1 64-bit, 0x2 debug, 0x10 linux, 0x2000 LZ4, 0x8000 zstd,
                          0x100000 arch-specific (the `a` of sm_90a), 0x200000 family (the `f` of sm_120f)
    56 u64 uncompressed size  of a compressed payload (0 when not compressed)

The `a`/`f` suffix lives only in those two flag bits: the embedded cubin of sm_121a has the same
e_flags as that of sm_121 (its ELF names the arch in a toolkit note only), so the header is read,
and no payload is ever decompressed: sizes come from the headers too. nvcc 13 compresses PTX with
zstd by default and everything with `-Xfatbin -compress-all` (LZ4 under `-compress-mode=speed`);
CUDA 12.x used LZ4.

Files are read through seek()/read() in increasing offset order as far as possible, and payloads
are skipped, never held: a multi-gigabyte libtorch_cuda.so streamed out of a wheel (a zip member,
whose backward seeks restart decompression) costs two passes and a few KB of memory.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..core.errors import InputError

CONTAINER_MAGIC = 0xBA55ED50
SECTIONS = (".nv_fatbin", "__nv_relfatbin")  # executable fatbin first, like cuobjdump

KIND_PTX, KIND_ELF, KIND_NVVM = 1, 2, 8
_KIND_NAMES = {KIND_PTX: "ptx", KIND_ELF: "sass", KIND_NVVM: "lto"}
_KIND_PREFIX = {"ptx": "compute", "sass": "sm", "lto": "lto"}

FLAG_LZ4 = 0x2000
FLAG_ZSTD = 0x8000
FLAG_ARCH_SPECIFIC = 0x100000  # sm_XYa / compute_XYa
FLAG_FAMILY = 0x200000  # sm_XYf / compute_XYf

_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHI8xQQQ")  # the 64 fixed bytes
_MIN_ENTRY = _ENTRY.size


class FatbinError(InputError):
    """A fatbin that cannot be read: truncated or corrupt."""


@dataclass(frozen=True)
class FatbinEntry:
    """One piece of device code in a fatbin container."""

    kind: str  # "sass" (a cubin), "ptx" or "lto" (NVVM IR); "kindN" for a kind not seen yet
    arch: str  # as nvcc writes it: "sm_90a", "sm_120f", "sm_121", "compute_80", "lto_90"
    size: int  # bytes of the code itself (uncompressed; padded to 8 when stored uncompressed)
    stored_size: int  # bytes it takes in the file
    compression: str | None  # None, "lz4" or "zstd"
    code_version: tuple[int, int]  # ELF ABI or PTX ISA version, as cuobjdump prints it
    section: str  # ".nv_fatbin" or "__nv_relfatbin"
    container: int  # index of its container (module) within the file, from 0

    @property
    def compressed(self) -> bool:
        return self.compression is not None


def arch_name(kind: str, sm: int, flags: int) -> str:
    """'sm_121a', 'compute_120f', ... from an entry's kind, arch number and flags."""
    suffix = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY else ""
    return f"{_KIND_PREFIX.get(kind, kind)}_{sm}{suffix}"


class _Reader:
    """Reads at absolute offsets of a file object, keeping the bytes of the last read.

    Skipping forward to the section header table (at the end of an ELF) keeps the window of
    bytes just before it, where linkers put `.shstrtab`: reading that then needs no second pass
    over a zip member, whose backward seeks decompress again from the start.
    """

    WINDOW = 1 << 16

    def __init__(self, f: BinaryIO, size: int):
        self.f, self.size = f, size
        self.pos = 0  # where f is
        self.buf, self.buf_start = b"", 0  # the bytes last read, and where they start
        f.seek(0)

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise EOFError(f"the file ends {n - len(data)} bytes early")
        return data

    def read_at(self, offset: int, n: int, *, keep_window: bool = False) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise EOFError(f"{n} bytes at {offset:#x} lie past the end ({self.size:#x})")
        if self.buf_start <= offset and offset + n <= self.buf_start + len(self.buf):
            start = offset - self.buf_start
            return self.buf[start:start + n]
        start = max(self.pos, offset - self.WINDOW) if keep_window and offset >= self.pos else offset
        if start != self.pos:
            self.f.seek(start)
        self.buf, self.buf_start = self._read(offset + n - start), start
        self.pos = offset + n
        return self.buf[offset - start:]


@dataclass(frozen=True)
class _Section:
    name: str
    offset: int
    size: int


def _fatbin_sections(r: _Reader, name: str) -> list[_Section]:
    """The fatbin sections of an ELF file, in file order; [] for any other file."""
    head = r.read_at(0, min(r.size, 64))
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return []
    is64, end = head[4] == 2, "<" if head[5] == 1 else ">"
    try:
        if is64:
            if len(head) < 64:
                raise EOFError("the ELF header is cut short")
            shoff, = struct.unpack_from(end + "Q", head, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x3A)
            shdr = struct.Struct(end + "IIQQQQIIQQ")  # name type flags addr offset size link info align entsize
        else:
            shoff, = struct.unpack_from(end + "I", head, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x2E)
            shdr = struct.Struct(end + "IIIIIIIIII")
        if shoff == 0:
            return []  # no section table (stripped of it): nothing to find by name
        if shentsize < shdr.size:
            raise FatbinError(f"{name}: corrupt ELF section header size {shentsize}")
        if shnum == 0 or shstrndx == 0xFFFF:  # too many sections for the header: section 0 holds the counts
            first = shdr.unpack(r.read_at(shoff, shdr.size, keep_window=True))
            shnum = shnum or first[5]
            shstrndx = first[6] if shstrndx == 0xFFFF else shstrndx
        table = r.read_at(shoff, shentsize * shnum, keep_window=True)
        headers = [shdr.unpack_from(table, i * shentsize) for i in range(shnum)]
        if shstrndx >= shnum:
            return []
        _, _, _, _, str_off, str_size, *_ = headers[shstrndx]
        strtab = r.read_at(str_off, str_size)
    except EOFError as e:
        raise FatbinError(f"{name}: truncated ELF file ({e})") from None
    found = []
    for h in headers:
        sh_name, sh_type, sh_offset, sh_size = h[0], h[1], h[4], h[5]
        label = strtab[sh_name:strtab.find(b"\0", sh_name)].decode("ascii", "replace")
        if label in SECTIONS and sh_type != 8:  # 8 = SHT_NOBITS: no bytes in the file
            found.append(_Section(label, sh_offset, sh_size))
    return sorted(found, key=lambda s: s.offset)


def _read_containers(r: _Reader, sec: _Section, name: str, first_index: int) -> tuple[list[FatbinEntry], int]:
    """The entries of a section's containers, numbered from first_index; and the next free number."""
    entries: list[FatbinEntry] = []
    pos, end, index = sec.offset, sec.offset + sec.size, first_index
    where = f"{name}: section {sec.name}"
    try:
        while pos + _CONTAINER.size <= end:
            magic, _version, header_size, body = _CONTAINER.unpack(r.read_at(pos, _CONTAINER.size))
            if magic == 0:  # alignment padding between the containers of linked objects
                pos += 8
                continue
            if magic != CONTAINER_MAGIC or header_size < _CONTAINER.size:
                raise FatbinError(f"{where}: no fatbin container at offset {pos - sec.offset:#x} "
                                  f"(magic {magic:#010x}, header size {header_size}); the fatbin is corrupt")
            stop = pos + header_size + body
            if stop > end:
                raise FatbinError(f"{where}: the container at offset {pos - sec.offset:#x} claims {body} bytes, "
                                  f"{stop - end} more than the section holds; the fatbin is truncated")
            p = pos + header_size
            while p < stop:
                if p + _MIN_ENTRY > stop:
                    raise FatbinError(f"{where}: entry header at offset {p - sec.offset:#x} runs past its "
                                      "container; the fatbin is truncated")
                (kind, _, hsize, payload, csize, _, minor, major, sm, flags, _, usize) = \
                    _ENTRY.unpack(r.read_at(p, _MIN_ENTRY))
                if hsize < _MIN_ENTRY or p + hsize + payload > stop:
                    raise FatbinError(f"{where}: entry at offset {p - sec.offset:#x} (header {hsize} bytes, "
                                      f"payload {payload}) runs past its container; the fatbin is corrupt")
                kind_name = _KIND_NAMES.get(kind, f"kind{kind}")
                compression = "zstd" if flags & FLAG_ZSTD else "lz4" if flags & FLAG_LZ4 else None
                entries.append(FatbinEntry(
                    kind=kind_name, arch=arch_name(kind_name, sm, flags),
                    size=usize if compression else payload,
                    stored_size=(csize or payload) if compression else payload,
                    compression=compression, code_version=(major, minor), section=sec.name, container=index))
                p += hsize + payload
            pos, index = stop, index + 1
    except EOFError as e:
        raise FatbinError(f"{where}: truncated ({e})") from None
    return entries, index


def read_elf(f: BinaryIO, size: int, name: str = "<file>", *, all_sections: bool = False) -> list[FatbinEntry]:
    """The device code of one ELF file, read from a seekable binary file object of `size` bytes.

    Like cuobjdump, only `.nv_fatbin` (the code the CUDA runtime loads) unless the file has none,
    then `__nv_relfatbin`; all_sections=True reads both. A file that is not ELF, or an ELF file
    without device code, gives []. A truncated or corrupt fatbin raises FatbinError naming `name`.
    """
    r = _Reader(f, size)
    sections = _fatbin_sections(r, name)
    if not all_sections and any(s.name == SECTIONS[0] for s in sections):
        sections = [s for s in sections if s.name == SECTIONS[0]]
    entries: list[FatbinEntry] = []
    index = 0
    for sec in sections:
        found, index = _read_containers(r, sec, name, index)
        entries += found
    return entries


def read_fatbin_bytes(data: bytes, name: str = "<fatbin>") -> list[FatbinEntry]:
    """The entries of a bare fatbin (what `nvcc -fatbin` writes, or a section's bytes)."""
    return _read_containers(_Reader(io.BytesIO(data), len(data)), _Section("fatbin", 0, len(data)), name, 0)[0]


def read_elf_bytes(data: bytes, name: str = "<bytes>", *, all_sections: bool = False) -> list[FatbinEntry]:
    """read_elf on bytes already in memory."""
    return read_elf(io.BytesIO(data), len(data), name, all_sections=all_sections)


def read_elf_path(path: str | os.PathLike, *, all_sections: bool = False) -> list[FatbinEntry]:
    """read_elf on a file on disk."""
    with open(path, "rb") as f:
        return read_elf(f, os.fstat(f.fileno()).st_size, str(path), all_sections=all_sections)
