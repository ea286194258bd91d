"""Known base images (assemble/data/bases.toml) and whether a lock's wheels can run on one."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from wheelfactory.core.errors import InputError, did_you_mean

from .datafiles import load_data

PROVISIONS = {"none", "apt"}


@dataclass(frozen=True)
class BaseImage:
    """What the assembler must know about a base image to install wheels on it."""

    ref: str
    python: str  # MAJOR.MINOR
    python_executable: str
    platforms: tuple[str, ...]  # linux_x86_64, linux_aarch64
    glibc: str
    provision: str  # none | apt
    python_packages: tuple[str, ...]  # what `provision` installs for Python (empty for none)
    dev_packages: tuple[str, ...]  # build tooling for -dev images
    cuda: str | None = None
    jit_packages: tuple[str, ...] = ()  # the host compiler of images with a JIT toolkit
    family: str | None = None  # distribution family (debian), for system_libraries.toml
    digest: str | None = None  # the registry digest the base is pinned to (FROM ref@digest)

    @property
    def needs_python(self) -> bool:
        return self.provision != "none"

    @property
    def pinned_ref(self) -> str:
        """What FROM names: the reference pinned to its digest when bases.toml gives one."""
        return f"{self.ref.split('@')[0]}@{self.digest}" if self.digest else self.ref


def load_bases(data: Mapping[str, Any] | None = None) -> dict[str, BaseImage]:
    """Every known base image by reference."""
    data = load_data("bases") if data is None else data
    provision = data.get("provision", {})
    out = {}
    for ref, t in data.get("bases", {}).items():
        how = t.get("provision", "none")
        if how not in PROVISIONS:
            raise InputError(f"bases.toml [{ref}]: provision {how!r} is not one of {sorted(PROVISIONS)}")
        pkgs = provision.get(how, {})
        # Build tooling and the JIT's compiler come from the family's package manager, also on a base
        # whose Python needs no provisioning (the local Debian base).
        tools = provision.get("apt", {}) if t.get("family") == "debian" else pkgs
        digest = t.get("digest")
        if digest is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", str(digest)):
            raise InputError(f"bases.toml [{ref}]: digest {digest!r} is not sha256:<64 hex digits>")
        out[ref] = BaseImage(ref, t["python"], t.get("python_executable", "/usr/bin/python3"),
                             tuple(t["platforms"]), t["glibc"], how, tuple(pkgs.get("python", ())),
                             tuple(tools.get("dev", ())), t.get("cuda"), tuple(tools.get("jit", ())), t.get("family"),
                             digest)
    return out


def find_base(ref: str, bases: Mapping[str, BaseImage]) -> BaseImage:
    """The known base `ref`, or InputError naming the data file to describe it in."""
    if ref in bases:
        return bases[ref]
    raise InputError(f"unknown base image {ref!r}{did_you_mean(ref, bases)}: the assembler must know its "
                     "Python, platform and glibc; describe it in assemble/data/bases.toml or pass "
                     f"--base-image with a known base ({', '.join(sorted(bases))})")


def _manylinux_platforms(platform: str, glibc: str) -> list[str]:
    """Platform tags a glibc-based image of `platform` (linux_<arch>) accepts, most specific first."""
    arch = platform.removeprefix("linux_")
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{arch}" for m, name in legacy.items() if m <= minor]
    return tags + [platform]


def supported_tags(base: BaseImage) -> set[Tag]:
    """Every wheel tag an interpreter of the base could install."""
    version = tuple(int(x) for x in base.python.split("."))
    platforms = [p for plat in base.platforms for p in _manylinux_platforms(plat, base.glibc)]
    tags = set(cpython_tags(version, platforms=platforms))
    tags |= set(compatible_tags(version, f"cp{version[0]}{version[1]}", platforms))
    return tags


def incompatible_wheels(filenames: Iterable[str], base: BaseImage) -> list[str]:
    """The wheel file names no interpreter of the base could install."""
    ok = supported_tags(base)
    bad = []
    for name in filenames:
        try:
            _, _, _, tags = parse_wheel_filename(name)
        except InvalidWheelFilename:
            bad.append(name)
            continue
        if not tags & ok:
            bad.append(name)
    return bad
