"""The factory's front door: turns command-line choices into loaded recipes, a release, a plan
and an executor, so that the CLI stays a thin layer of options and messages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import InputError
from .executor import ExecOptions, Executor
from .host import Host, detect_host
from .plan import Plan, PlanOptions, make_target, plan_release
from .recipe import LoadedRecipe, load_recipes
from .release import Release, load_release
from .sources import is_local_wheel, local_source
from .toolkit import WheelToolkit, load_toolkit, mismatch_warning
from .wheelhouse import Wheelhouse

DEFAULT_RELEASE = "0.15.0-t4"


def default_recipes_dir() -> Path:
    """recipes/ of the checkout this package was installed from (editable install)."""
    return Path(__file__).resolve().parent.parent / "recipes"


def _component_assignments(option: str, values: Sequence[str], example: str) -> dict[str, str]:
    """`--OPTION COMPONENT=VALUE` options into {component: value}, or InputError showing the form."""
    out = {}
    for value in values:
        comp, eq, rest = value.partition("=")
        if not eq or not comp or not rest:
            raise InputError(f"--{option} {value!r}: expected {example.split(' ', 1)[0]}, e.g. --{option} "
                             f"{example.split(' ', 1)[1]}")
        out[comp] = rest
    return out


def parse_env_options(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """`--env COMPONENT:KEY=VALUE` options into {component: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for value in values:
        comp, sep, assignment = value.partition(":")
        key, eq, val = assignment.partition("=")
        if not sep or not eq or not comp or not key:
            raise InputError(f"--env {value!r}: expected COMPONENT:KEY=VALUE, e.g. "
                             "--env 'nccl:ONLY_FUNCS=AllReduce Sum f32 RING SIMPLE|SendRecv'")
        out.setdefault(comp, {})[key] = val
    return out


def parse_adopt_options(values: Sequence[str]) -> dict[str, str]:
    """`--adopt COMPONENT=WHEEL|REQUIREMENT` options; a local wheel path is made absolute."""
    specs = _component_assignments("adopt", values, "COMPONENT=WHEEL|REQUIREMENT 'torch=torch==2.10.0'")
    return {c: str(Path(s).expanduser().resolve()) if is_local_wheel(s) else s for c, s in specs.items()}


def parse_source_dirs(values: Sequence[str]) -> dict[str, str]:
    """`--source-dir COMPONENT=PATH` and `--source-dir COMPONENT.EXTRA=PATH` options."""
    return _component_assignments("source-dir", values, "COMPONENT=PATH nccl=~/src/nccl")


@dataclass
class Factory:
    recipes_dir: Path
    wheelhouse_dir: Path
    cache_dir: Path
    index_url: str = "https://pypi.org/simple"
    host_probe: Callable[[], Host] = field(default=detect_host)
    system_cuda: bool = False  # --system-cuda: build with the host's toolkit, not the release's from wheels
    verify: bool = False  # build --verify: hash cached wheels in full before trusting them

    @cached_property
    def recipes(self) -> Mapping[str, LoadedRecipe]:
        return load_recipes(self.recipes_dir)

    @cached_property
    def wheelhouse(self) -> Wheelhouse:
        return Wheelhouse(self.wheelhouse_dir)

    @cached_property
    def host(self) -> Host:
        return self.host_probe()

    def release(self, name_or_path: str) -> Release:
        return load_release(name_or_path, self.recipes, self.recipes_dir)

    def plan(self, release: Release, targets: Sequence[str] = (), env: Sequence[str] = (),
             source_dirs: Sequence[str] = (), adopt: Sequence[str] = ()) -> Plan:
        """Plan a release for this host, marking steps the wheelhouse already holds."""
        sources = {c: local_source(Path(p).expanduser(), f"--source-dir {c}")
                   for c, p in parse_source_dirs(source_dirs).items()}
        options = PlanOptions(env=parse_env_options(env), sources=sources, adopt=parse_adopt_options(adopt))
        toolkit = self.toolkit(release)
        target = make_target(release, self.host.platform, toolkit.label if toolkit else self.host.toolkit)
        cached = self.wheelhouse.cached_keys()
        return plan_release(release, self.recipes, target, targets, options, is_cached=cached.__contains__)

    def toolkit(self, release: Release) -> WheelToolkit | None:
        """The CUDA toolkit from wheels that builds of the release use, or None for the host's
        (--system-cuda, or the release's [target] system_cuda = true)."""
        if self.system_cuda or release.target.system_cuda:
            return None
        return load_toolkit(self.recipes_dir / "data" / "cuda_wheels.toml", release.target.cuda, self.host.platform)

    def executor(self, plan: Plan, echo: Callable[[str], None], **options: object) -> Executor:
        toolkit = self.toolkit(plan.release)
        if toolkit is None and (warning := mismatch_warning(plan.target.cuda, self.host.toolkit)):
            echo(warning)  # before anything is fetched or built
        return Executor(plan, self.wheelhouse, self.recipes, self.host,
                        ExecOptions(cache_dir=self.cache_dir, index_url=self.index_url, verify=self.verify, **options),  # type: ignore[arg-type]
                        echo, toolkit=toolkit)
