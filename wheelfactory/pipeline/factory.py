"""The factory's front door: turns command-line choices into loaded recipes, a release, a plan
and an executor, so that the CLI stays a thin layer of options and messages."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError, InputError
from ..core.grammar import check_env_key, check_env_value
from ..core.secretenv import parse_secret_env
from ..host.facts import Host, detect_host
from ..planning.plan import BuildHost, Plan, PlanOptions, make_target, plan_release
from ..planning.recipe import LoadedRecipe, load_recipes
from ..planning.release import Release, load_release
from ..run.runner import Runner
from ..sources.fetch import SourceCache
from ..sources.kinds import Source, is_local_wheel, local_source
from ..store.wheelhouse import Wheelhouse
from ..toolchain.crossbuild import CrossSetup, check_target_machine, cross_blockers, machine_of
from ..toolchain.installer import Installer
from ..toolchain.toolkit import ToolkitCache, WheelToolkit, load_toolkit, mismatch_warning
from .executor import ExecOptions, Executor

# The newest release whose vLLM device code was checked for its arch (wheelfactory/cuda/data/device_code_checked.toml),
# every component built from source with one CUDA: what `plan` and `build` without --release mean.
DEFAULT_RELEASE = "0.33.0-t5"


def default_recipes_dir() -> Path:
    """The shipped recipes, releases, data and patches.

    In a checkout (an editable install, or run from the tree) they are its recipes/, so that a
    second checkout never reads the first one's recipes. Installed (pip, pipx, uv tool) they are
    the package wheelfactory_recipes, which pyproject.toml builds from recipes/."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "recipes").is_dir():
        return checkout / "recipes"
    spec = importlib.util.find_spec("wheelfactory_recipes")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("this wheelfactory installation has no shipped recipes (package wheelfactory_recipes); "
                         "reinstall it (pip install .) or pass --recipes-dir")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


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
        check_env_key(key, f"--env {value!r}")
        out.setdefault(comp, {})[key] = check_env_value(val, f"--env {comp}:{key}")
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
    # --secret-env COMPONENT:NAME values (set by the CLI's callback, as system_cuda is)
    secret_env: tuple[str, ...] = ()
    # The layer under recipes_dir: --recipes-dir adds the user's recipes, releases and data on top
    # of the shipped ones instead of replacing them all. None: recipes_dir alone.
    shipped_recipes_dir: Path | None = None
    # --cross: build a release meant for another machine for that machine (crossbuild.py), with the
    # target's CUDA libraries from its wheels or from --target-cuda DIR
    cross: bool = False
    target_cuda: Path | None = None

    @property
    def cache(self) -> CacheLayout:
        """The cache's directories (a property: a --cache-dir after the command sets cache_dir late)."""
        return CacheLayout(self.cache_dir)

    @property
    def recipes_dirs(self) -> tuple[Path, ...]:
        """Where recipes, releases and data files are looked up; on a name, the first one wins."""
        under = self.shipped_recipes_dir
        if under is None or under.resolve() == self.recipes_dir.resolve():
            return (self.recipes_dir,)
        return (self.recipes_dir, under)

    def data_root(self, name: str) -> Path:
        """The recipes directory whose data/<name> is used: the user's when it has one, else the shipped."""
        for d in self.recipes_dirs:
            if (d / "data" / name).is_file():
                return d
        return self.recipes_dirs[-1]  # absent everywhere: the reader names the shipped path

    @cached_property
    def recipes(self) -> Mapping[str, LoadedRecipe]:
        return load_recipes(*self.recipes_dirs)

    @cached_property
    def wheelhouse(self) -> Wheelhouse:
        return Wheelhouse(self.wheelhouse_dir)

    @cached_property
    def host(self) -> Host:
        return self.host_probe()

    def release(self, name_or_path: str) -> Release:
        return load_release(name_or_path, self.recipes, self.recipes_dirs)

    def plan(self, release: Release, targets: Sequence[str] = (), env: Sequence[str] = (),
             source_dirs: Sequence[str] = (), adopt: Sequence[str] = ()) -> Plan:
        """Plan a release for this host, marking steps the wheelhouse already holds."""
        sources = {c: local_source(Path(p).expanduser(), f"--source-dir {c}")
                   for c, p in parse_source_dirs(source_dirs).items()}
        options = PlanOptions(env=parse_env_options(env), sources=sources, adopt=parse_adopt_options(adopt),
                              secrets=parse_secret_env(self.secret_env), build_index=self.index_url)
        toolkit = self.toolkit(release)
        cross = self.cross_setup(release)
        platform = release.target.platform if cross is not None else self.host.platform
        target = make_target(release, platform, toolkit.label if toolkit else self.host.toolkit)
        build_host = BuildHost(machine_of(self.host.platform), cross.identity if cross is not None else None)
        cached = self.wheelhouse.cached_keys()
        return plan_release(release, self.recipes, target, targets, options, is_cached=cached.__contains__,
                            recorded=self.sources.recorded, build_host=build_host)

    def cross_setup(self, release: Release) -> CrossSetup | None:
        """With --cross and a release meant for another machine: where its CUDA libraries come from.
        None when nothing is cross-built (no --cross, or the release is meant for this machine)."""
        machine = machine_of(release.target.platform)
        if not self.cross or machine == machine_of(self.host.platform):
            if self.target_cuda is not None and not self.cross:
                raise InputError(f"--target-cuda {self.target_cuda}: only a cross build uses it; add --cross")
            return None
        check_target_machine(machine, f"{release.path} [target].platform")
        if self.target_cuda is not None:
            if not self.target_cuda.is_dir():
                raise InputError(f"--target-cuda {self.target_cuda}: not a directory (expected the target's CUDA "
                                 "libraries under lib64/ or lib/)")
            return CrossSetup(machine, directory=self.target_cuda)
        return CrossSetup(machine, toolkit=load_toolkit(self.data_root("cuda_wheels.toml") / "data" /
                                                        "cuda_wheels.toml", release.target.cuda,
                                                        release.target.platform))

    @cached_property
    def sources(self) -> SourceCache:
        return SourceCache(self.cache_dir, self.index_url)

    def resolve_sources(self, plan: Plan, echo: Callable[[str], None], *, refresh: bool = False,
                        accept_moved: bool = False) -> bool:
        """Record a commit or sha256 for every source the plan's builds use, so that what is built is
        keyed by its content; True when a record changed (plan again: the keys change). `build`
        resolves only what was never recorded; `fetch` (refresh) asks again for every tag, branch and
        sdist: a followed branch moves on, a moved tag or changed sdist is a BuildError naming both
        (all of them at once) unless accept_moved."""
        release = plan.release
        runner = Runner("sources", self.cache.log("resolve"))
        changed, moved = False, []
        seen: set[Source] = set()
        for step in plan.steps:
            named = ([("source", step.source)] if step.source else []) + list(step.extra_sources.items())
            for name, source in named:
                if source in seen:
                    continue
                seen.add(source)
                where = f"{release.path} [components.{step.component}]" + (
                    ".source" if name == "source" else f" extra source {name!r}")
                before = self.sources.recorded(source)
                try:
                    note = self.sources.resolve(source, runner, refresh=refresh, accept_moved=accept_moved)
                except InputError as e:
                    raise InputError(f"{where}: {e}") from None
                except BuildError as e:
                    moved.append(f"{where}: {e}")
                    continue
                if note:
                    echo(f"[{step.component}] {note}")
                changed |= self.sources.recorded(source) != before
        if moved:
            raise BuildError("\n".join(moved))
        return changed

    def sources_in_use(self, releases: Sequence[str]) -> tuple[set[str], list[str]]:
        """(the commits and sha256s of every source and extra source the releases plan, the releases
        planned): what `cache gc` keeps. A source stands for what its release pins or what fetch
        recorded for it (an sdist on any index: the same release fetched through a mirror); a local
        directory for nothing (it is used in place). InputError/BuildError of a release that cannot
        be planned propagate."""
        keep: set[str] = set()
        planned = []
        for name in releases:
            plan = self.plan(self.release(name))
            planned.append(plan.release.name)
            for step in plan.steps:
                for source in ([step.source] if step.source else []) + list(step.extra_sources.values()):
                    keep |= source.known_contents(self.sources.records)
        return keep, planned

    def toolkit(self, release: Release) -> WheelToolkit | None:
        """The CUDA toolkit from wheels that builds of the release use, or None for the host's
        (--system-cuda, or the release's [target] system_cuda = true)."""
        if self.system_cuda or release.target.system_cuda:
            return None
        return load_toolkit(self.data_root("cuda_wheels.toml") / "data" / "cuda_wheels.toml", release.target.cuda,
                            self.host.platform)

    def build_nvcc(self, release: Release) -> Path | None:
        """The nvcc builds of the release will run: the wheel toolkit's (assembled or not yet), or
        the host's with --system-cuda; None where there is none."""
        toolkit = self.toolkit(release)
        if toolkit is not None:
            return ToolkitCache(self.cache.toolkits, self.index_url).root_of(toolkit) / "bin" / "nvcc"
        return Path(self.host.cuda_home, "bin", "nvcc") if self.host.cuda_home else None

    def executor(self, plan: Plan, echo: Callable[[str], None], installer: Installer | None = None,
                 **options: object) -> Executor:
        toolkit = self.toolkit(plan.release)
        if toolkit is None and (warning := mismatch_warning(plan.target.cuda, self.host.toolkit)):
            echo(warning)  # before anything is fetched or built
        if blockers := cross_blockers(plan.steps, plan.target.platform):
            raise InputError("\n".join(blockers))
        return Executor(plan, self.wheelhouse, self.recipes, self.host,
                        ExecOptions(cache_dir=self.cache_dir, index_url=self.index_url, verify=self.verify, **options),  # type: ignore[arg-type]
                        echo, toolkit=toolkit, installer=installer, cross=self.cross_setup(plan.release))
