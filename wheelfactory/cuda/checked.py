"""Which component versions had their device code checked on their real configure, per arch
(wheelfactory/cuda/data/device_code_checked.toml), so that `plan` can flag a step whose build may
stop at configure, and `build` can run that configure before the hours of its dependencies."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "device_code_checked.toml"


@functools.cache
def _table() -> dict[str, dict[str, Any]]:
    with open(DATA, "rb") as f:
        return tomllib.load(f)


def checked_components() -> tuple[str, ...]:
    """The components whose device code is tracked here."""
    return tuple(_table())


def unchecked_archs(component: str, version: str, options: Mapping[str, Any], archs: Iterable[str]) -> tuple[str, ...]:
    """The archs of the release for which this component version's device code was never checked;
    () for a component not tracked here or a build that compiles no device code."""
    entry = _table().get(component)
    if entry is None:
        return ()
    switch = entry.get("compiles_unless")
    if switch and options.get(switch, True) is False:
        return ()
    return tuple(a for a in archs if version not in entry.get(a, ()))
