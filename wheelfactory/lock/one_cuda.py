"""One CUDA per lock: the NVIDIA CUDA wheels a release's CUDA version means, as uv constraints, and
the refusal of a resolution that mixes toolkit versions.

recipes/data/cuda_wheels.toml lists, per CUDA major.minor, the library wheels (`requires`) and the
JIT toolkit wheels (`jit`) at their versions. Every one of them is a constraint of the lock whether
the release pins it or not: a dependency that asks for `nvidia-cuda-nvcc` unpinned must not pull
the newest (13.5) beside a 13.0 runtime. A wheel "tracks" the CUDA version when its version starts
with that CUDA's major.minor (nvcc, nvvm, crt, cccl, runtime, nvrtc, cupti, nvtx, nvjitlink, ...;
not cuBLAS or cuDNN, versioned apart); a lock whose tracking wheels are not all at the release's
CUDA is refused, naming them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from ..core.errors import BuildError, InputError
from ..core.grammar import check_distribution_name, check_version_text


def cuda_minor(cuda: str) -> str:
    """'13.1.0' -> '13.1'."""
    return ".".join(cuda.split(".")[:2])


def load_cuda_wheels(path: Path) -> dict[str, Any]:
    """cuda_wheels.toml's table, every pin checked (a --recipes-dir may bring its own file)."""
    with open(path, "rb") as f:
        table = tomllib.load(f)
    for minor, entry in table.items():
        _pins(entry, minor, str(path))
    return table


def _pins(entry: Mapping[str, Any], minor: str, file: str = "cuda_wheels.toml") -> list[tuple[str, str]]:
    """(canonical name, version) of the entry's `requires` and `jit` pins; InputError naming the file,
    key and value of one that is not NAME==VERSION (it becomes a uv constraint line as it is)."""
    if not isinstance(entry, Mapping):
        raise InputError(f'{file} ["{minor}"]: expected a table of requires = [...] and jit = [...], got {entry!r}')
    pins = []
    for key in ("requires", "jit"):
        if not isinstance(entry.get(key, []), list):
            raise InputError(f'{file} ["{minor}"].{key}: expected a list of NAME==VERSION, got {entry[key]!r}')
        for i, pin in enumerate(entry.get(key, [])):
            name, _, version = pin.partition("==") if isinstance(pin, str) else ("", "", "")
            try:  # the grammar of a release's own pins; their messages are replaced by one naming the file
                check_distribution_name(name, "")
                ok = bool(check_version_text(version, "")) and "==" not in version
            except InputError:
                ok = False
            if not ok:
                raise InputError(f'{file} ["{minor}"].{key}[{i}]: {pin!r} is not a pin NAME==VERSION, '
                                 "e.g. nvidia-cuda-nvcc==13.0.88")
            pins.append((canonicalize_name(name), version))
    return pins


def toolkit_constraints(table: Mapping[str, Any], cuda: str) -> list[str]:
    """uv constraint lines: every CUDA wheel of the release's CUDA at its version ([] for a CUDA the data lacks)."""
    entry = table.get(cuda_minor(cuda))
    return [f"{name}=={version}" for name, version in _pins(entry, cuda_minor(cuda))] if entry else []


def tracking_names(table: Mapping[str, Any]) -> set[str]:
    """The wheels whose version is the CUDA version they belong to, in any CUDA entry of the table."""
    return {name for minor, entry in table.items() for name, version in _pins(entry, minor)
            if cuda_minor(version) == minor}


def mixed_toolkit(locked: Iterable[tuple[str, str]], table: Mapping[str, Any], cuda: str) -> list[tuple[str, str]]:
    """The locked (name, version) of tracking wheels that are not at the release's CUDA major.minor."""
    tracking = tracking_names(table)
    want = cuda_minor(cuda)
    return sorted((n, v) for n, v in locked if canonicalize_name(n) in tracking and cuda_minor(v) != want)


def refuse_mixed(release: str, locked: Iterable[tuple[str, str]], table: Mapping[str, Any], cuda: str) -> None:
    """BuildError (exit 1) naming the toolkit wheels of a lock that mix CUDA versions."""
    locked = list(locked)
    bad = mixed_toolkit(locked, table, cuda)
    if not bad:
        return
    tracking = tracking_names(table)
    ok = sorted((n, v) for n, v in locked if canonicalize_name(n) in tracking and (n, v) not in bad)
    raise BuildError(
        f"the resolution of release {release!r} mixes CUDA toolkit versions: the release's CUDA is {cuda} "
        f"(recipes/data/cuda_wheels.toml), but it resolved {', '.join(f'{n} {v}' for n, v in bad)}"
        + (f" beside {', '.join(f'{n} {v}' for n, v in ok)}" if ok else "")
        + ". A package requires that CUDA; pin it to the release's CUDA version, or change the release's CUDA.")


def carried_cuda(locked: Iterable[tuple[str, str]], table: Mapping[str, Any]) -> str | None:
    """The CUDA major.minor a lock's tracking wheels carry (None when it has none)."""
    tracking = tracking_names(table)
    versions = {cuda_minor(v) for n, v in locked if canonicalize_name(n) in tracking}
    return versions.pop() if len(versions) == 1 else None
