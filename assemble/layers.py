"""Which locked wheel goes into which layer, and how many bytes each layer installs."""

from __future__ import annotations

import zipfile
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wheelfactory.core.errors import InputError
from wheelfactory.lock.closure import Lock, LockedPackage

from .spec import LayerGroup


@dataclass(frozen=True)
class Layer:
    """One RUN of the Dockerfile: the wheels it installs."""

    name: str  # the group's name, or name-1, name-2 ... when the group was split
    group: LayerGroup
    packages: tuple[LockedPackage, ...]
    installed_bytes: int  # sum of the uncompressed sizes of the files in its wheels


def installed_size(wheel: Path) -> int:
    """Bytes a wheel installs: the sum of the uncompressed sizes of its files."""
    with zipfile.ZipFile(wheel) as z:
        return sum(i.file_size for i in z.infolist() if not i.is_dir())


def assign(packages: Iterable[LockedPackage], groups: Sequence[LayerGroup], cuda_names: set[str],
           differing: Collection[str] = ()) -> dict[str, list[LockedPackage]]:
    """Group name -> its packages: exact names first, then sibling differences, CUDA wheels, the rest."""
    out: dict[str, list[LockedPackage]] = {g.name: [] for g in groups}
    by_name = {p: g.name for g in groups for p in g.packages}
    cuda_group = next((g.name for g in groups if g.cuda_wheels), None)
    rest_group = next((g.name for g in groups if g.rest), None)
    sibling_group = next((g.name for g in groups if g.sibling_differences), None)
    for pkg in sorted(packages, key=lambda p: p.name):
        target = by_name.get(pkg.name) or (sibling_group if pkg.name in differing else None) or \
            (cuda_group if pkg.name in cuda_names else None) or rest_group
        if target is None:
            raise InputError(f"no layer group takes {pkg.name}; assemble/data/layers.toml needs a group with "
                             "rest = true")
        out[target].append(pkg)
    return out


def split(group: LayerGroup, packages: Sequence[LockedPackage], sizes: dict[str, int], limit: int) -> list[Layer]:
    """One layer for the group, or several of at most `limit` installed bytes each (packages in name order)."""
    parts: list[list[LockedPackage]] = [[]]
    total = 0
    for pkg in packages:
        size = sizes[pkg.filename]
        if size > limit:
            raise InputError(f"{pkg.filename} installs {size / 1e9:.2f} GB, more than the layer limit of "
                             f"{limit / 1e9:.2f} GB; raise --max-layer-bytes (registries reject layers over 10 GB)")
        if parts[-1] and total + size > limit:
            parts.append([])
            total = 0
        parts[-1].append(pkg)
        total += size
    if len(parts) == 1:
        return [Layer(group.name, group, tuple(parts[0]), sum(sizes[p.filename] for p in parts[0]))]
    return [Layer(f"{group.name}-{i}", group, tuple(part), sum(sizes[p.filename] for p in part))
            for i, part in enumerate(parts, 1)]


def sibling_differences(lock: Lock, others: Iterable[Lock]) -> set[str]:
    """Packages locked differently by a sibling lock: same vLLM version, other transformers version."""
    def versions(x: Lock) -> dict[str, str]:
        return {p.name: p.version for p in x.packages}
    ours = versions(lock)
    out: set[str] = set()
    for other in others:
        theirs = versions(other)
        if other.release == lock.release or "vllm" not in ours or theirs.get("vllm") != ours["vllm"] or \
                theirs.get("transformers") in (None, ours.get("transformers")):
            continue
        out |= {n for n in set(ours) | set(theirs) if ours.get(n) != theirs.get(n)}
    return out


def plan_layers(packages: Sequence[LockedPackage], groups: Sequence[LayerGroup], cuda_names: set[str],
                wheel_dir: Path, limit: int, differing: Collection[str] = ()) -> list[Layer]:
    """The layers of an image, in build order, with the locked wheels of each."""
    sizes = {p.filename: installed_size(wheel_dir / p.filename) for p in packages}
    assigned = assign(packages, groups, cuda_names, differing)
    return [layer for g in groups for layer in split(g, assigned[g.name], sizes, limit)]
