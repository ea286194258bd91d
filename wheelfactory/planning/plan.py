"""The planner: a pure function from (release, targets, options) to an ordered, keyed plan.

Each step's build key is a sha256 over everything that decides the bytes of its wheels:
the recipe's declaration, code and declared data files, the engine modules that shape wheels
(code as its canonical digest, codehash.py: docstrings, comments, annotations and paths do not count),
the source identity, the resolved build environment and options, the target, the keys of its
dependencies and this tool's version. Jobs counts, timestamps
and absolute paths never enter it, so a key is the same on every machine and every run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.codehash import file_digest, set_digest
from ..core.errors import InputError, did_you_mean
from ..core.secretenv import REDACTED, is_secret_name
from ..cuda.checked import unchecked_archs
from ..sources.kinds import Source
from ..sources.patches import Patch, declared_patches
from ..toolchain.crossbuild import CROSS, EMULATED, key_input, step_mode
from ..toolchain.pydeps import DEFAULT_INDEX, index_identity
from .adopt import check_adopt_spec
from .recipe import EnvSpec, GccNeed, HostLibrary, LoadedRecipe, Target
from .release import Release

BUILD, CACHED, ADOPT = "build", "cached", "adopt"

# The version of `plan --json`'s shape (Plan.to_json). Bump it whenever a key is added, removed or
# changes type, and regenerate tests/golden/plan-json-shape.json (see tests/test_golden.py), so
# that scripts reading the plan can tell which shape they were given.
# 2: each step's mode (native, cross, emulated) and the plan's build_host; 3: steps[].unchecked_archs
PLAN_FORMAT_VERSION = 3


@dataclass(frozen=True)
class PlanOptions:
    """Command-line choices that change what is built."""

    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # component -> extra env
    sources: Mapping[str, Source] = field(default_factory=dict)  # component -> source override
    adopt: Mapping[str, str] = field(default_factory=dict)  # component -> wheel/requirement to adopt
    # component -> {name: value} passed to its build only (--secret-env); see secretenv.py
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The index build requirements come from (its identity, pydeps.py): enters every build's key.
    build_index: str = DEFAULT_INDEX


@dataclass(frozen=True)
class BuildHost:
    """Where the steps run: this host's machine, and with --cross the identity of the target's CUDA
    libraries that cross steps link (None: no cross build was asked for)."""

    machine: str
    cross_cuda: str | None = None

    @property
    def cross(self) -> bool:
        return self.cross_cuda is not None


@dataclass(frozen=True)
class Step:
    """One component of the plan."""

    component: str
    version: str
    action: str  # build | cached | adopt
    key: str
    depends_on: tuple[str, ...]
    build_with: tuple[str, ...]
    source: Source | None
    adopt: str | None
    env: Mapping[str, str]
    build_requires: tuple[str, ...]
    extra_sources: Mapping[str, Source]
    outputs: tuple[str, ...]
    mem_per_job_gb: float
    keep_debug: bool
    options: Mapping[str, Any]
    key_inputs: Mapping[str, Any]
    # Patch files by tree ("source" or an extra source's name), applied in the prepare phase.
    patches: Mapping[str, tuple[Patch, ...]] = field(default_factory=dict)
    # Secret values for the build's processes only (env shows them as REDACTED): kept out of
    # repr, to_json and the key inputs, so no plan, manifest or log can print them.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    disk_gb: float = 5.0  # the recipe's estimate of the work tree's peak, for the host check (not keyed)
    gcc_need: GccNeed | None = None  # the oldest GCC the build accepts, for the host check (not keyed)
    host_libraries: tuple[HostLibrary, ...] = ()  # C libraries it links from the host (host check; not keyed)
    # How the step runs (crossbuild.py): native, cross or emulated; None for an adopted wheel.
    mode: str | None = None
    # The release's archs this version's device code was never checked for on its real configure
    # (checked.py): its build may stop at configure. Not keyed: it says what is known, not what is built.
    unchecked_archs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "version": self.version,
            "action": self.action,
            "key": self.key,
            "depends_on": list(self.depends_on),
            "source": self.source.describe() if self.source else None,
            "adopt": self.adopt,
            "env": dict(self.env),
            "build_requires": list(self.build_requires),
            "extra_sources": {n: s.describe() for n, s in self.extra_sources.items()},
            "outputs": list(self.outputs),
            "options": dict(self.options),
            "patches": {tree: [p.name for p in ps] for tree, ps in self.patches.items()},
            "unresolved": list(self.unresolved),
            "mode": self.mode,
            "unchecked_archs": list(self.unchecked_archs),
        }

    @property
    def unresolved(self) -> tuple[str, ...]:
        """The step's sources (the main one as "source") whose content fetch has not recorded yet:
        their key changes once it has."""
        trees = {"source": self.key_inputs.get("source", {})} | dict(self.key_inputs.get("extra_sources", {}))
        return tuple(name for name, identity in trees.items() if "unresolved" in identity)


@dataclass(frozen=True)
class Plan:
    release: Release
    target: Target
    steps: tuple[Step, ...]
    pins: Mapping[str, str]
    # The release's [overrides]: name -> {kind (pin | component), version, reason}. The lock makes
    # each version win over what other packages declare (vLLM's torch==X when the release adopts Y).
    overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    build_host: BuildHost | None = None  # None: the target's own machine, no cross build

    def step(self, component: str) -> Step:
        for s in self.steps:
            if s.component == component:
                return s
        raise KeyError(component)

    def to_json(self) -> dict[str, Any]:
        """`plan --json`: a stable contract, its shape pinned by tests/golden/plan-json-shape.json."""
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "release": self.release.name,
            "target": dataclasses.asdict(self.target),
            "steps": [s.to_json() for s in self.steps],
            "pins": dict(self.pins),
            "overrides": {name: dict(o) for name, o in self.overrides.items()},
            "build_host": {"machine": (self.build_host.machine if self.build_host else self.target.machine),
                           "cross": bool(self.build_host and self.build_host.cross)},
        }


# What a build key's inputs mean. Bump it when the same inputs come to be computed differently, so
# that no key of the old meaning can match a new one: 2 = recipe and engine code enter as canonical
# code digests (codehash.py), no longer as file bytes.
KEY_FORMAT = 2

# The engine modules whose code decides the bytes of a built wheel, beyond what the key already
# names, by import name below wheelfactory (wherever a module lives: a move edits this list and
# changes no key, see codehash.py). What each one decides:
#   buildenv    the build's environment (SOURCE_DATE_EPOCH, the CUDA compiler variables, what is inherited)
#   cargo       the Rust build's environment and toolchain (CARGO_HOME's config, rustup's toolchain)
#   context     the default build command and the source edits every recipe uses
#   crossbuild  a cross step's toolchain: the cross CUDA root, the CMake toolchain file, the compilers
#   installer   what goes into the build venv (the base build requirements, the tree's [build-system])
#   patches     how patch files are applied
#   provenance  the .dist-info/wheelfactory.json every built wheel carries
#   pydeps      which build-requirement files (per index, hash-pinned) the build venv installs
#   repair      strip and retag
#   stepbuild   the phases: the source copy, patches, venv, hooks and default build, repair, stamp
#   wheelpack   wheel layout, RECORD, timestamps
# Left out, so that editing them rebuilds nothing: modules that plan, order, lock, log, fetch by
# content or only check (plan, executor, runner, fetch, outputs, audit, devicecode, wheelhouse);
# toolkit.py, whose assembled root is named by its LAYOUT_VERSION in the target's toolkit identity;
# cuda_arch.py, whose flags reach a build only through a recipe hook's env (keyed as values).
# tests/test_codehash.py makes each factory module these modules or a recipe import one or the other.
ENGINE_MODULES = ("pipeline.buildenv", "sources.cargo", "planning.context", "toolchain.crossbuild",
                  "toolchain.installer", "sources.patches", "pipeline.provenance", "toolchain.pydeps",
                  "pipeline.repair", "pipeline.stepbuild", "store.wheelpack")


def engine_files() -> dict[str, Path]:
    """Each declared engine module's file, found by import name (without importing it)."""
    files = {}
    for name in ENGINE_MODULES:
        spec = importlib.util.find_spec(f"wheelfactory.{name}")
        if spec is None or spec.origin is None:
            raise RuntimeError(f"ENGINE_MODULES names {name!r}, which is not a module of wheelfactory")
        files[name] = Path(spec.origin)
    return files


@functools.cache
def engine_sha256() -> str:
    """The engine modules' canonical code digests as one digest: names, paths and order do not
    enter it (read once per process)."""
    return set_digest(file_digest(path) for path in engine_files().values())


def canonical_json(obj: Any) -> str:
    """Stable JSON for hashing: sorted keys, no whitespace, dataclasses as dicts."""
    def default(o: Any) -> Any:
        if isinstance(o, type):  # an Option's value type: bool, int, str
            return o.__name__
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if isinstance(o, Mapping):
            return dict(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        raise TypeError(f"not hashable into a key: {o!r}")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default)


def build_key(inputs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a step's key inputs."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


def _order(targets: Sequence[str], recipes: Mapping[str, LoadedRecipe], release: Release) -> list[str]:
    """Targets and their dependencies, dependencies first (depth-first, declaration order)."""
    order: list[str] = []

    def visit(name: str, needed_by: str | None) -> None:
        if name in order:
            return
        if name not in release.components:
            by = f" (needed by {needed_by})" if needed_by else ""
            raise InputError(f"{release.path}: release {release.name!r} has no [components.{name}]{by}; "
                             f"add it with a version")
        for dep in recipes[name].recipe.depends_on:
            # A dependency the release does not carry is skipped: e.g. a CI release without triton.
            if dep in release.components:
                visit(dep, name)
        order.append(name)

    for t in targets:
        visit(t, None)
    return order


def plan_release(
    release: Release,
    recipes: Mapping[str, LoadedRecipe],
    target: Target,
    targets: Sequence[str] = (),
    options: PlanOptions | None = None,
    is_cached: Callable[[str], bool] = lambda key: False,
    recorded: Callable[[Source], str | None] = lambda source: None,
    build_host: BuildHost | None = None,
) -> Plan:
    """Order the components the targets need and key each one. Pure: touches no file or network
    except hashing a local source directory. `recorded` gives the content (commit, sha256) that
    `fetch` recorded for a source; a source without one is keyed by its name, marked unresolved.
    `build_host` is where the steps run (default: the target's machine); with its cross_cuda set,
    steps for another machine cross-compile or run emulated (crossbuild.step_mode)."""
    host = build_host or BuildHost(target.machine)
    options = options or PlanOptions()
    named = list(options.env) + list(options.secrets) + [n.split(".")[0] for n in options.sources]
    for name in list(targets) + named + list(options.adopt):
        if name not in recipes:
            raise InputError(f"unknown component {name!r}{did_you_mean(name, recipes)}; "
                             f"known: {', '.join(sorted(recipes))}")
    names = _order(list(targets) or list(release.components), recipes, release)
    versions = {n: c.version for n, c in release.components.items()} | dict(release.pins)
    target_json = dataclasses.asdict(target)
    keys: dict[str, str] = {}
    steps = []
    for name in names:
        loaded = recipes[name]
        recipe = loaded.recipe
        spec = release.components[name]
        deps = tuple(d for d in recipe.depends_on if d in keys)
        source = options.sources.get(name) or spec.source or recipe.source
        if source is not None:
            source = source.with_version(spec.version)
        adopt = options.adopt.get(name) or spec.adopt
        if name in options.adopt:
            adopt = check_adopt_spec(adopt, recipe, f"--adopt {name}={adopt}", spec.version)
        defaults = {o.name: o.default for o in recipe.options}
        if adopt and (steered := sorted(k for k, v in spec.options.items() if k not in defaults or defaults[k] != v)):
            # Options steer a build; an adopted wheel is taken as it is, so they would do nothing.
            raise InputError(f"{release.path} [components.{name}]: options {', '.join(steered)} apply to a build, "
                             f"and {name} is adopted ({adopt}); remove the options or the adopt")
        if adopt:
            source_identity: Any = {"adopt": adopt}
            action = ADOPT
        elif source is None:
            raise InputError(f"{release.path} [components.{name}]: recipe {name!r} has no default source; "
                             "give a source or an adopt = '<wheel or requirement>'")
        else:
            source_identity = source.identity(recorded(source))
            action = BUILD
        env: dict[str, str] = {}
        secrets: dict[str, str] = {}
        build_requires: list[str] = []
        extra_sources: dict[str, Source] = {}
        if action == BUILD:
            # Only a build asks the recipe's hooks: they may read per-version build data (vLLM's
            # CMake dependencies, Triton's LLVM) that an adopted version has no need of.
            env_spec = EnvSpec(spec.version, target, versions, spec.options)
            env = dict(recipe.env)
            if (hook := loaded.hook("environment")) is not None:
                env.update(hook(env_spec))
            build_requires = list(recipe.build_requires)
            if (hook := loaded.hook("requirements")) is not None:
                build_requires += hook(env_spec)
            if (hook := loaded.hook("extra_sources")) is not None:
                extra_sources = dict(hook(env_spec))
            extra_sources = _override_extra_sources(name, extra_sources, spec.extra_sources, options.sources,
                                                    release)
            env.update(spec.env)
            env.update(options.env.get(name, {}))
            # A secret (--secret-env, or an --env whose name looks secret) enters env and the key
            # by name only; the executor puts the value back for the build (secretenv.py says why).
            secrets = {k: v for k, v in options.env.get(name, {}).items() if is_secret_name(k)}
            secrets |= options.secrets.get(name, {})
            env.update(dict.fromkeys(secrets, REDACTED))
        patches = (declared_patches(loaded.path.parent, name, spec.version, tuple(extra_sources),
                                    known=_possible_trees(loaded, spec.version, target, versions))
                   if action == BUILD else {})
        inputs = {
            "tool": __version__,
            "key_format": KEY_FORMAT,
            "component": name,
            "version": spec.version,
            "recipe": {"declaration": canonical_json(recipe.key_declaration()), "code": loaded.code_digest,
                       "data": dict(sorted(loaded.data_sha256.items())) if action == BUILD else {}},
            "engine": engine_sha256(),
            "source": source_identity,
            "env": env if action == BUILD else {},
            "build_requires": build_requires if action == BUILD else [],
            "extra_sources": ({n: x.identity(recorded(x)) for n, x in sorted(extra_sources.items())}
                              if action == BUILD else {}),
            "options": dict(spec.options),
            "keep_debug": spec.keep_debug,
            "target": target_json,
            "deps": {d: keys[d] for d in deps} if action == BUILD else {},
            "patches": {tree: [p.identity() for p in ps] for tree, ps in sorted(patches.items())},
            # Where the build requirements come from: another index may serve other files under
            # the same names, so it is another key (pydeps.py).
            # (An adopted wheel installs no build requirement: its key stays as it was.)
            **({"build_index": index_identity(options.build_index)} if action == BUILD else {}),
        }
        mode = step_mode(building=action == BUILD, host_machine=host.machine, target_machine=target.machine,
                         cross=host.cross, recipe_cross=loaded.cross)
        if mode in (CROSS, EMULATED):
            # Only then: a native step's key is what it was before cross builds existed.
            inputs["build"] = key_input(mode, host.machine, target.machine, host.cross_cuda or "")
        key = build_key(inputs)
        keys[name] = key
        build_with = tuple(d for d in recipe.build_deps if d in keys)
        steps.append(Step(name, spec.version, CACHED if is_cached(key) else action, key, deps, build_with,
                          source if action == BUILD else None, adopt, env if action == BUILD else {},
                          tuple(build_requires) if action == BUILD else (),
                          extra_sources if action == BUILD else {}, recipe.outputs,
                          recipe.mem_per_job_gb, spec.keep_debug, spec.options, inputs, patches,
                          secrets=secrets if action == BUILD else {}, mode=mode,
                          unchecked_archs=(unchecked_archs(name, spec.version, spec.options, target.cuda_arch_list)
                                           if action == BUILD else ()),
                          disk_gb=recipe.disk_estimate(spec.options),
                          gcc_need=recipe.gcc_need(spec.version, spec.options),
                          host_libraries=recipe.host_libraries))
    return Plan(release, target, tuple(steps), dict(release.pins), release.override_table(), build_host)


def _override_extra_sources(name: str, extra: dict[str, Source], from_release: Mapping[str, Source],
                            from_options: Mapping[str, Source], release: Release) -> dict[str, Source]:
    """Extra sources replaced by the release's [components.X.extra_sources] and `--source-dir X.NAME=PATH`."""
    overrides = dict(from_release) | {k.split(".", 1)[1]: v for k, v in from_options.items()
                                      if k.startswith(f"{name}.")}
    for extra_name, source in overrides.items():
        if extra_name not in extra:
            known = ", ".join(sorted(extra)) or "none with these options"
            raise InputError(f"{release.path} [components.{name}]: extra source {extra_name!r} is not one of "
                             f"{name}'s{did_you_mean(extra_name, extra)} (known: {known})")
        extra[extra_name] = source
    return extra


def _possible_trees(loaded: LoadedRecipe, version: str, target: Target,
                    versions: Mapping[str, str]) -> tuple[str, ...]:
    """The extra sources a component version has with its recipe's default options: patches may
    name them even when a release's options leave them out (vLLM with kernels = false)."""
    hook = loaded.hook("extra_sources")
    if hook is None:
        return ()
    try:
        return tuple(hook(EnvSpec(version, target, versions, loaded.recipe.option_defaults())))
    except InputError:
        return ()


def make_target(release: Release, platform: str, toolkit: str) -> Target:
    """The target a build on this host produces for a release."""
    t = release.target
    return Target(t.python, t.cuda, t.cuda_arch_list, platform, toolkit)
