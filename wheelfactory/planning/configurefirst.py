"""vLLM's configure before torch's hours: when a release builds a vLLM version whose device code was
never checked for the release's arch (checked.py), and builds its dependencies first (torch: 1-3 h),
`build` first configures that vLLM against its dependencies adopted from the index (torch only hands
vLLM's CMake its config and the arch list; the others are not compiled against), in a wheelhouse of
its own, and stops with the device-code table if that configure would compile code the arch cannot
load. What the README's 0.15.0 recipe did by hand with `--until configure --adopt ...`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.cachelayout import CacheLayout
from .plan import BUILD, Plan, Step
from .recipe import LoadedRecipe


@dataclass(frozen=True)
class ConfigureFirst:
    """The unchecked step to configure first, and its dependencies to adopt: {component: requirement}."""

    step: Step
    adopt: Mapping[str, str]

    def adopt_options(self) -> tuple[str, ...]:
        return tuple(f"{c}={r}" for c, r in self.adopt.items())


def _closure(plan: Plan, component: str) -> list[Step]:
    """The steps `component` depends on, directly or not, in plan order."""
    wanted, todo = set(), list(plan.step(component).depends_on)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += plan.step(name).depends_on
    return [s for s in plan.steps if s.component in wanted]


def requirement_of(step: Step, recipe: LoadedRecipe) -> str:
    """The index's wheel of a component version: its first output at the version (an upstream tag
    form such as NCCL's 2.29.2-1 without its packaging revision)."""
    version = step.version.split("-")[0] if recipe.recipe.version_pattern else step.version
    return f"{recipe.recipe.outputs[0]}=={version}"


def configure_first(plan: Plan, recipes: Mapping[str, LoadedRecipe]) -> ConfigureFirst | None:
    """What to configure before the build, or None: no step to build has unchecked device code, or
    every dependency of it is already there (the build reaches its configure in minutes anyway)."""
    for step in plan.steps:
        if step.action != BUILD or not step.unchecked_archs:
            continue
        built_first = [d for d in _closure(plan, step.component) if d.action == BUILD]
        if not built_first:
            return None
        return ConfigureFirst(step, {d.component: requirement_of(d, recipes[d.component]) for d in built_first})
    return None


def check_dir(cache_dir: Path, release: str) -> Path:
    """Where the check's wheelhouse lives: in the cache, never the user's wheelhouse (its adopted
    wheels must not stand in for the ones the release builds)."""
    return CacheLayout(cache_dir).configure_check(release)
