"""The ptxas environment variables each Triton version reads (data/triton_ptxas.toml)."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

DATA = Path(__file__).resolve().parent / "data" / "triton_ptxas.toml"


@functools.cache
def _ranges(path: Path = DATA) -> tuple[tuple[SpecifierSet, tuple[str, ...]], ...]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return tuple((SpecifierSet(r["triton"]), tuple(r["env"])) for r in data["range"])


def ptxas_knobs(triton_version: str | None, path: Path = DATA) -> tuple[str, ...]:
    """The variables the given Triton reads for ptxas; every known one when the version is unknown."""
    ranges = _ranges(path)
    if triton_version:
        try:
            version = Version(triton_version)
        except InvalidVersion:
            version = None
        if version is not None:
            # prereleases too: a 3.6.0rc reads what 3.6.0 reads
            for spec, env in ranges:
                if spec.contains(version, prereleases=True):
                    return env
    return tuple(dict.fromkeys(k for _, env in ranges for k in env))


def ptxas_env(triton_version: str | None, ptxas: str) -> dict[str, str]:
    """Every ptxas variable of that Triton pointed at one ptxas (the toolkit wheels')."""
    return {knob: ptxas for knob in ptxas_knobs(triton_version)}
