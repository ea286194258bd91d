"""`build --rebuild COMPONENT` / `--force`: which of a plan's steps run again although cached.

A build key names its inputs, not the bytes a build produced: a flaky compiler, a host library
or a suspect wheel are reasons to build the same key again. The old wheels go to attic/ when the
new ones are published (as any superseded build's do), so nothing is lost if the rebuild fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..core.errors import InputError, did_you_mean
from .plan import Plan


def components_to_rebuild(plan: Plan, rebuild: Sequence[str], force: bool, known: Iterable[str]) -> frozenset[str]:
    """The plan's components to build even if cached; InputError naming a --rebuild value that is
    not a known component or not part of this plan."""
    in_plan = [s.component for s in plan.steps]
    known = set(known)
    for name in rebuild:
        if name not in known:
            raise InputError(f"--rebuild {name!r}: unknown component{did_you_mean(name, known)}; "
                             f"known: {', '.join(sorted(known))}")
        if name not in in_plan:
            raise InputError(f"--rebuild {name!r}: not part of this build (release {plan.release.name} with these "
                             f"targets builds {', '.join(in_plan)}); name it as a target too")
    return frozenset(in_plan) if force else frozenset(rebuild)
