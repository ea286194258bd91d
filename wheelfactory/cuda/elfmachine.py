"""Does every ELF file in a wheel run on the machine its platform tag names?

A wheel tagged linux_aarch64 that carries an x86-64 shared object installs on a Spark and fails at
import with "cannot open shared object file" or "wrong ELF class"; one built on the wrong host, or
a step that picked the host's compiler instead of the target's, produces exactly that. The check
reads only the ELF header (64 bytes) of each member, so it costs nothing beside the CRC pass the
wheelhouse already makes, and it runs on every wheel before it is published, built or adopted.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.structs import ELFStructs

from ..core.errors import BuildError

ELF_MAGIC = b"\x7fELF"
HEADER_BYTES = 64  # an ELF64 header; ELF32's is 52

# The wheel platform tag's machine suffix -> pyelftools' e_machine name and the words people know it by.
MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("EM_X86_64", "x86-64"),
    "aarch64": ("EM_AARCH64", "AArch64"),
    "i686": ("EM_386", "x86 (32-bit)"),
    "ppc64le": ("EM_PPC64", "PowerPC 64"),
    "s390x": ("EM_S390", "IBM S/390"),
    "armv7l": ("EM_ARM", "ARM (32-bit)"),
}
_NAMES = {em: words for em, words in MACHINES.values()}


def header_machine(header: bytes) -> str | None:
    """The e_machine name ('EM_AARCH64') of an ELF header, or None when the bytes are no ELF header."""
    if len(header) < 20 or not header.startswith(ELF_MAGIC) or header[4] not in (1, 2) or header[5] not in (1, 2):
        return None
    structs = ELFStructs(little_endian=header[5] == 1, elfclass=32 if header[4] == 1 else 64)
    structs.create_basic_structs()
    try:
        ehdr = structs.Elf_Ehdr.parse_stream(io.BytesIO(header.ljust(HEADER_BYTES, b"\0")))
    except ELFError:
        return None
    return str(ehdr["e_machine"])


def tag_machine(platform_tag: str) -> str | None:
    """The machine a platform tag names ('manylinux_2_28_aarch64' -> 'aarch64'); None for 'any' and the unknown."""
    for machine in sorted(MACHINES, key=len, reverse=True):
        if platform_tag == f"linux_{machine}" or (platform_tag.startswith(("manylinux", "musllinux"))
                                                    and platform_tag.endswith(f"_{machine}")):
            return machine
    return None


def describe(e_machine: str) -> str:
    """Words for an e_machine name ('EM_AARCH64' -> 'AArch64')."""
    return _NAMES.get(e_machine, e_machine)


def wrong_machine_members(zf: zipfile.ZipFile, machines: Iterable[str]) -> list[tuple[str, str]]:
    """(member, e_machine) of every ELF member of an open wheel that is built for none of `machines`."""
    wanted = {MACHINES[m][0] for m in machines}
    wrong = []
    for info in zf.infolist():
        if info.is_dir() or info.file_size < 20:
            continue
        with zf.open(info) as member:
            em = header_machine(member.read(HEADER_BYTES))
        if em is not None and em not in wanted:
            wrong.append((info.filename, em))
    return wrong


def check_wheel_machine(path: Path, platform_tags: Iterable[str]) -> None:
    """BuildError naming the wheel and its first foreign ELF when an ELF's machine is not the one its tags name.

    Wheels tagged for no machine (py3-none-any) are not judged: a pure-Python wheel that ships a
    helper binary for several machines is legitimate.
    """
    machines = {m for tag in platform_tags if (m := tag_machine(tag))}
    if not machines:
        return
    with zipfile.ZipFile(path) as zf:
        wrong = wrong_machine_members(zf, machines)
    if wrong:
        member, em = wrong[0]
        more = f" (and {len(wrong) - 1} more ELF file(s))" if len(wrong) > 1 else ""
        tagged = " / ".join(sorted(describe(MACHINES[m][0]) for m in machines))
        raise BuildError(f"{path.name}: {member} is an {describe(em)} ELF file but the wheel is tagged for {tagged}"
                         f"{more}; it was built for the wrong machine (build it on or for the tagged machine)")
