"""Test recipe (not shipped): the C-extension stand-in of tests/fixtures/cext-standin, built from its
source by setuptools with the machine's C compiler (the default build: `python -m build` in the
build venv)."""

from __future__ import annotations

from wheelfactory.planning.recipe import Recipe, Repair

RECIPE = Recipe(
    name="cext",
    summary="Stand-in for a Python package with a C extension (tests/fixtures/cext-standin)",
    source=None,  # the release names the stand-in's directory
    outputs=("cext-standin",),
    # the platform tag of the machine it was built on (linux_aarch64 there), debug symbols stripped
    repair=Repair(mode="retag", strip=True),
    smoke=("import cext_standin; assert cext_standin.add(2, 3) == 5",),
)
