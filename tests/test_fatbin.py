"""The fatbin reader against nvcc-built fixtures and what NVIDIA's cuobjdump says about them."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.cuda import fatbin
from wheelfactory.cuda.fatbin import FatbinError, read_elf, read_elf_bytes, read_elf_path, read_fatbin_bytes

from .conftest import fatbin_fixture

# The fixtures are built with nvcc once per session (conftest.fatbin_fixture), so the module is slow.
pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent / "data" / "fatbin"
_CUOBJDUMP_KIND = {"elf": "sass", "ptx": "ptx", "nvvm": "lto"}


def cuobjdump_record() -> dict[str, dict]:
    """tests/data/fatbin/cuobjdump.txt: per fixture, cuobjdump's entry headers and extracted sizes."""
    record: dict[str, dict] = {}
    current = entry = None
    for line in (DATA / "cuobjdump.txt").read_text().splitlines():
        if line.startswith("== "):
            current = record.setdefault(line[3:], {"entries": [], "extracted": []})
        elif m := re.match(r"^Fatbin (\w+) code:", line):
            entry = {"kind": _CUOBJDUMP_KIND[m[1]], "compressed": False}
            current["entries"].append(entry)
        elif line.startswith("arch = "):
            entry["arch"] = line.removeprefix("arch = ")
        elif line.startswith("code version = "):
            entry["code_version"] = tuple(int(x) for x in line.split("=")[1].strip(" []").split(","))
        elif line == "compressed":
            entry["compressed"] = True
        elif m := re.match(r"^extracted (\d+)\.(\w+)\.(cubin|ptx) (\d+)$", line):
            current["extracted"].append(("sass" if m[3] == "cubin" else "ptx", int(m[1]), m[2], int(m[4])))
    return record


RECORD = cuobjdump_record()
FIXTURES = sorted(RECORD)


def entries(name: str, **kw) -> list[fatbin.FatbinEntry]:
    return read_elf_path(fatbin_fixture(name), **kw)


def test_every_fixture_has_a_cuobjdump_record():
    built = fatbin_fixture("sass_ptx.so").parent
    assert {p.name for p in built.iterdir()} == set(RECORD)
    assert sum(len(r["entries"]) for r in RECORD.values()) >= 25


@pytest.mark.parametrize("name", FIXTURES)
def test_entries_match_cuobjdump(name):
    """Kind, arch (with its a/f suffix), code version and compression, entry by entry, in order."""
    want = RECORD[name]["entries"]
    got = entries(name, all_sections=True)  # the record was taken with cuobjdump -all
    assert len(got) == len(want)
    for e, w in zip(got, want, strict=True):
        # cuobjdump spells every arch sm_XY; nvcc (and this reader) write PTX compute_XY, NVVM IR lto_XY
        number = re.sub(r"^[a-z]+_", "", e.arch)
        assert (e.kind, number, e.code_version, e.compressed) == \
            (w["kind"], w["arch"].removeprefix("sm_"), w["code_version"], w["compressed"]), (name, e, w)


@pytest.mark.parametrize("name", FIXTURES)
def test_sizes_match_what_cuobjdump_extracts(name):
    got = entries(name, all_sections=True)
    for kind, index, arch, size in RECORD[name]["extracted"]:
        e = [x for x in got if x.kind == kind][index - 1]
        assert e.arch.split("_")[1].rstrip("af") == arch.split("_")[1].rstrip("af")
        if kind == "sass":
            assert e.size == size
        else:  # cuobjdump writes PTX without its NUL terminator (and without the padding to 8)
            assert 0 < e.size - size < 8


def test_arch_specific_and_family_suffixes():
    assert [e.arch for e in entries("arch_specific.so")] == ["sm_121", "compute_121a", "sm_121a", "sm_120a"]
    assert [e.arch for e in entries("family.so")] == ["sm_100f", "compute_120f", "sm_120f"]
    assert [e.arch for e in entries("uncompressed.so")] == ["sm_90a", "compute_80"]
    assert [(e.kind, e.arch) for e in entries("sass_ptx.so")] == [("ptx", "compute_80"), ("sass", "sm_80")]


def test_compression_is_told_apart():
    assert {e.compression for e in entries("lz4.so")} == {"lz4"}
    assert {e.compression for e in entries("zstd_size.so")} == {"zstd"}
    assert {e.compression for e in entries("uncompressed.so")} == {None}
    # nvcc 13's default: PTX compressed, SASS not
    assert {e.kind: e.compression for e in entries("sass_ptx.so")} == {"ptx": "zstd", "sass": None}


def test_stored_and_uncompressed_sizes():
    for e in entries("arch_specific.so"):
        assert e.compressed and 0 < e.stored_size < e.size
    for e in entries("uncompressed.so"):
        assert not e.compressed and e.stored_size == e.size and e.size % 8 == 0


def test_containers_are_numbered_per_module():
    assert [(e.arch, e.container) for e in entries("two_modules.so")] == [("sm_121a", 0), ("sm_80", 1)]
    # nvcc -shared adds the device-link stub: a container of its own with an (empty) cubin
    assert [(e.arch, e.container) for e in entries("nvcc_shared.so")] == \
        [("sm_80", 0), ("compute_80", 1), ("sm_80", 1)]


def test_relocatable_and_lto_code():
    rdc = entries("rdc.o")
    assert {e.section for e in rdc} == {"__nv_relfatbin"}
    assert [e.arch for e in rdc] == ["sm_80", "compute_120a", "sm_120a"]
    assert [(e.kind, e.arch) for e in entries("lto.o")] == [("lto", "lto_90"), ("lto", "lto_121a")]


def test_no_device_code_gives_nothing():
    assert entries("host_only.so") == []
    assert read_elf_bytes(b"") == []
    assert read_elf_bytes(b"#!/bin/sh\necho not an ELF file\n" * 4) == []
    assert read_elf_bytes((DATA / "kernel.cu").read_bytes()) == []


def _first_container(data: bytes) -> int:
    return data.index(struct.pack("<I", fatbin.CONTAINER_MAGIC))


def test_truncated_container_is_an_error():
    data = bytearray(fatbin_fixture("sass_ptx.so").read_bytes())
    at = _first_container(data)
    (size,) = struct.unpack_from("<Q", data, at + 8)
    struct.pack_into("<Q", data, at + 8, size + 4096)  # claims more than the section holds
    with pytest.raises(FatbinError, match=r"broken\.so: section \.nv_fatbin: .*truncated"):
        read_elf_bytes(bytes(data), "broken.so")


def test_corrupt_entry_is_an_error():
    data = bytearray(fatbin_fixture("sass_ptx.so").read_bytes())
    at = _first_container(data) + 16
    struct.pack_into("<Q", data, at + 8, 1 << 40)  # an entry payload past its container
    with pytest.raises(FatbinError, match="runs past its container"):
        read_elf_bytes(bytes(data), "broken.so")


def test_corrupt_magic_is_an_error():
    data = bytearray(fatbin_fixture("sass_ptx.so").read_bytes())
    data[_first_container(data)] ^= 0xFF
    with pytest.raises(FatbinError, match="no fatbin container at offset 0x0"):
        read_elf_bytes(bytes(data), "broken.so")


def test_truncated_elf_is_an_error_and_bad_input():
    data = fatbin_fixture("sass_ptx.so").read_bytes()
    with pytest.raises(FatbinError, match="cut.so: truncated ELF file") as err:
        read_elf_bytes(data[: len(data) // 2], "cut.so")
    assert isinstance(err.value, InputError) and err.value.exit_code == 2


def test_bare_fatbin_with_padding_between_containers():
    data = fatbin_fixture("two_modules.so").read_bytes()
    at = _first_container(data)
    first = data[at:at + 16 + struct.unpack_from("<Q", data, at + 8)[0]]
    got = read_fatbin_bytes(first + bytes(8) + first)
    assert [(e.arch, e.container) for e in got] == [("sm_121a", 0), ("sm_121a", 1)]


def test_streams_from_a_deflated_zip_member():
    """A wheel member is read in place; what it reads is the same as from the file."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(fatbin_fixture("arch_specific.so"), "pkg/arch_specific.so")
    with zipfile.ZipFile(buf) as zf:
        info = zf.getinfo("pkg/arch_specific.so")
        with zf.open(info) as member:
            got = read_elf(member, info.file_size, "member")
    assert got == entries("arch_specific.so")


class _CountingFile(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        out = super().read(n)
        self.bytes_read += len(out)
        return out


def test_payloads_are_skipped_not_read(monkeypatch):
    """Only headers are read: the memory and time of an audit do not grow with the device code."""
    monkeypatch.setattr(fatbin._Reader, "WINDOW", 256)
    data = fatbin_fixture("uncompressed.so").read_bytes()
    f = _CountingFile(data)
    got = read_elf(f, len(data))
    payload = sum(e.stored_size for e in got)
    assert payload > 3000 and f.bytes_read < len(data) - payload
