"""System libraries per Python package (assemble/data/system_libraries.toml).

Some wheels load shared libraries from the system instead of shipping them (torchcodec: FFmpeg).
An image whose package set holds such a package installs them from the base image's package
manager; the closure check accepts one resolving member of a package's variant set (one build
per FFmpeg major) instead of demanding all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from wheelfactory.core.errors import InputError

from .datafiles import load_data

FAMILIES = {"debian"}


@dataclass(frozen=True)
class SystemLibraries:
    """What one Python package needs from the system."""

    package: str  # canonical name
    about: str
    packages: Mapping[str, tuple[str, ...]]  # family -> package manager names
    variants: re.Pattern[str] | None = None  # over ELF paths; group 1 names the variant


def load_system_libraries(data: Mapping[str, Any] | None = None) -> dict[str, SystemLibraries]:
    """Every package of the data file, by canonical name; InputError naming the key of a bad entry."""
    data = load_data("system_libraries") if data is None else data
    out = {}
    for name, t in data.get("packages", {}).items():
        where = f"system_libraries.toml [packages.{name}]"
        unknown = set(t) - FAMILIES - {"about", "variants"}
        if unknown:
            raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; expected about, variants or a "
                             f"distribution family ({', '.join(sorted(FAMILIES))})")
        variants = None
        if "variants" in t:
            try:
                variants = re.compile(t["variants"])
            except re.error as e:
                raise InputError(f"{where}.variants: not a regular expression: {e}") from None
            if variants.groups < 1:
                raise InputError(f"{where}.variants: needs a group naming the variant, e.g. '_core(\\d+)\\.so$'")
        out[canonicalize_name(name)] = SystemLibraries(
            canonicalize_name(name), t.get("about", ""),
            {f: tuple(t[f]) for f in sorted(FAMILIES) if f in t}, variants)
    return out


def needed_system_packages(names: Iterable[str], family: str | None, base_ref: str,
                           known: Mapping[str, SystemLibraries] | None = None,
                           ) -> list[tuple[str, str, tuple[str, ...]]]:
    """(python package, why, system package names) for each package of `names` that needs system
    libraries, in name order; InputError when the base's family has no names for one."""
    known = load_system_libraries() if known is None else known
    out = []
    for name in sorted({canonicalize_name(n) for n in names}):
        libs = known.get(name)
        if libs is None:
            continue
        if family is None or family not in libs.packages:
            raise InputError(f"{name} needs system libraries ({libs.about}), but assemble/data/system_libraries.toml "
                             f"lists none for base {base_ref} (family {family or 'unknown'}); add its "
                             f"package names there, or `family` to the base in assemble/data/bases.toml")
        out.append((name, libs.about, libs.packages[family]))
    return out


def variant_sets(known: Mapping[str, SystemLibraries] | None = None) -> dict[str, re.Pattern[str]]:
    """Python package -> the pattern of its variant set's files, for the closure check."""
    known = load_system_libraries() if known is None else known
    return {name: libs.variants for name, libs in known.items() if libs.variants is not None}
