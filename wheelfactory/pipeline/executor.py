"""Running a plan: fetch sources, then build or adopt each step that the wheelhouse does not hold,
and publish its wheels. This module knows the order of operations and the locks:

- a per-key lock in the cache (work/<component>-<key>.lock) for the whole step, so two processes
  never build the same thing at once (into one wheelhouse or two);
- the wheelhouse lock only while publishing (seconds), so an unrelated build into the same
  wheelhouse runs at the same time; a process waiting for it says who holds it, and `--wait`
  bounds the wait (exit 3).

One build step's phases live in stepbuild.py, its environment in buildenv.py, venv filling in
installer.py, output checks in outputs.py. Component knowledge stays in the recipes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError, FactoryError, InputError
from ..core.interrupt import file_lock
from ..host.facts import Host
from ..planning.adopt import check_adopted_wheel
from ..planning.context import FetchContext
from ..planning.plan import ADOPT, BUILD, CACHED, Plan, Step
from ..planning.recipe import LoadedRecipe
from ..run.progress import StepClock, Timings, fmt_duration
from ..run.runner import Runner
from ..sources.fetch import SourceCache
from ..sources.kinds import is_local_wheel
from ..store.wheelhouse import Wheelhouse
from ..store.wheelmeta import read_wheel, sha256_file
from ..toolchain.ccache import ensure_ccache
from ..toolchain.crossbuild import CROSS, CrossSetup
from ..toolchain.installer import Installer, default_installer, download
from ..toolchain.pydeps import pydeps_dir, record_pins
from ..toolchain.toolkit import ToolkitCache, WheelToolkit
from .buildenv import inherited_environ
from .outputs import adopted_wheel, audit_wheels
from .stepbuild import (
    PHASES,
    BuiltStep,
    StepBuild,
    StepServices,
    StoppedAfter,
    read_state,
    step_build_requirements,
    step_failure,
    work_dir,
)

__all__ = ["PHASES", "ExecOptions", "Executor", "StepResult", "StoppedAfter", "find_python"]


@dataclass(frozen=True)
class ExecOptions:
    cache_dir: Path
    jobs: int | None = None  # None: memory-aware default per recipe
    offline: bool = False
    keep_work: bool = False
    verbose: bool = False
    python: str | None = None  # interpreter for build venvs (default: python<target> on PATH)
    index_url: str = "https://pypi.org/simple"
    # Stop the targets' steps after this phase (PHASES): keep the work tree, publish nothing.
    until: str | None = None
    until_steps: tuple[str, ...] = ()  # the components --until applies to (the named targets)
    # Hash every cached wheel in full before trusting it, instead of the size+mtime fast path.
    verify: bool = False
    # Components to build again although cached (--rebuild / --force); the old wheels go to attic/.
    rebuild: frozenset[str] = frozenset()
    # Seconds to wait for the wheelhouse lock before giving up with exit 3 (None: as long as it takes).
    wait: float | None = None
    fresh: bool = False  # never resume a kept work tree: start every step over
    use_pip: bool = False  # fill build venvs with pip instead of uv (hard links from uv's cache)


@dataclass(frozen=True)
class StepResult:
    component: str
    action: str
    wheels: tuple[str, ...]
    seconds: float
    log: str | None = None
    bytes_saved: int = 0


def find_python(version: str, override: str | None) -> str:
    """The interpreter build venvs are made with: it decides the wheels' cpXY tag."""
    if override:
        return override
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    found = shutil.which(f"python{version}")
    if not found:
        raise InputError(f"the release targets Python {version}, and there is no python{version} on PATH; "
                         f"install it or pass --python /path/to/python{version}")
    return found


class Executor:
    def __init__(self, plan: Plan, wheelhouse: Wheelhouse, recipes: Mapping[str, LoadedRecipe], host: Host,
                 options: ExecOptions, echo: Callable[[str], None] = print, toolkit: WheelToolkit | None = None,
                 installer: Installer | None = None, cross: CrossSetup | None = None):
        self.plan = plan
        self.cross = cross  # a cross build's target CUDA libraries (crossbuild.py), else None
        self.wheelhouse = wheelhouse
        self.recipes = recipes
        # The CUDA toolkit builds use: assembled from wheels (the default), or the host's (None).
        # Its root's path is known before it is assembled (content-addressed), so every step and
        # ${cuda_home} see it as the host's CUDA home; a step assembles it before first use.
        self.toolkit = toolkit
        self.toolkits = ToolkitCache(CacheLayout(options.cache_dir).toolkits, options.index_url)
        if toolkit is not None:
            host = dataclasses.replace(host, cuda_home=str(self.toolkits.root_of(toolkit)), toolkit=toolkit.label)
        self.host = host
        self.opts = options
        self.echo = echo
        self.installer = installer or default_installer(options.cache_dir, "pip" if options.use_pip else "uv")
        self.sources = SourceCache(options.cache_dir, options.index_url)
        self.pydeps = pydeps_dir(options.cache_dir, options.index_url)  # this index's own (pydeps.py)
        self.logs = CacheLayout(options.cache_dir).logs
        self._python: str | None = None
        self._ccache: list[str | None] = []  # resolved (and installed if need be) once per run

    # -- public --------------------------------------------------------------------------------

    @property
    def python(self) -> str:
        """The interpreter for build venvs; resolved on first use, before any step runs."""
        if self._python is None:
            self._python = find_python(self.plan.target.python, self.opts.python)
        return self._python

    def fetch(self) -> None:
        """Download every source, adopted wheel and build requirement the plan's builds need, and the
        requirements of the dependency wheels known so far (adopted or already built), so that
        `build --offline` needs no network. Runtime requirements of a dependency not built yet (a
        source-built torch) can only be known once it is: an online build collects them."""
        steps = [s for s in self.plan.steps if s.action in (BUILD, ADOPT)]
        if steps:
            self.python  # noqa: B018 -- fail on a missing interpreter before downloading anything
        if self.toolkit is not None and any(s.action == BUILD for s in steps):
            self.toolkits.ensure(self.toolkit, offline=False, echo=self.echo)
        if self.cross is not None and any(s.action == BUILD and s.mode == CROSS for s in steps):
            self.cross.ensure(self.toolkits, offline=False, echo=self.echo)
        known: dict[str, list[Path]] = {s.component: self.wheelhouse.files_for_key(s.key) or []
                                        for s in self.plan.steps}
        for i, step in enumerate(steps, 1):
            self.echo(f"[{i}/{len(steps)}] fetch {step.component} {step.version}")
            runner = Runner(step.component, self.logs / f"fetch-{step.component}.log", verbose=self.opts.verbose)
            if step.action == ADOPT:
                known[step.component] = [self._adopted_wheel(step, runner)]
                continue
            assert step.source is not None
            tree = self.sources.fetch(step.source, runner)
            for extra in step.extra_sources.values():
                self.sources.fetch(extra, runner)
            if (hook := self.recipes[step.component].hook("fetch")) is not None:
                hook(FetchContext(step, tree, self.opts.cache_dir, runner, offline=False, echo=self.echo))
            deps = [str(w) for d in step.build_with for w in known.get(d, [])]
            reqs = deps + step_build_requirements(step, tree, self.recipes)
            pins = download(runner, self.python, reqs, self.pydeps, wheelhouse=self.wheelhouse.root,
                            index_url=self.opts.index_url, local_names=self.wheelhouse.manifest())
            record_pins(self.pydeps, reqs, pins)  # what `build --offline` installs for these requirements

    def build(self) -> list[StepResult]:
        """Build (or adopt) every step not already in the wheelhouse, in order."""
        if any(s.action != CACHED for s in self.plan.steps):
            self.python  # noqa: B018 -- fail on a missing interpreter before building anything
        # A publish killed by SIGKILL is repaired first, even when every step is cached and
        # nothing will be published (a stale index would otherwise stay until the next publish).
        self.wheelhouse.recover_if_idle(self.echo)
        self._check_adopted_files()
        return [self._step(i, step) for i, step in enumerate(self.plan.steps, 1)]

    def _check_adopted_files(self) -> None:
        """A local wheel the plan adopts is checked (present, this component at the release's
        version for the target, a readable wheel) before any step runs: exit 2 then means that
        nothing was built, not that its dependencies were built first."""
        for step in self.plan.steps:
            if step.action != ADOPT or step.adopt is None or not is_local_wheel(step.adopt):
                continue
            wheel = Path(step.adopt)
            if not wheel.is_file():
                raise InputError(f"[{step.component}] adopt = {step.adopt!r}: no such wheel file; nothing was built")
            recipe = self.recipes[step.component].recipe
            check_adopted_wheel(wheel, step.component, step.version, recipe, self.plan.target)
            try:
                read_wheel(wheel)
            except BuildError as e:
                raise InputError(f"[{step.component}] adopted wheel: {e}; nothing was built") from None

    # -- one step ------------------------------------------------------------------------------

    def _step(self, i: int, step: Step) -> StepResult:
        total = len(self.plan.steps)
        started = time.monotonic()
        stopping = self.opts.until is not None and step.component in self.opts.until_steps
        forced = step.component in self.opts.rebuild
        if not stopping and not forced and self._cached(step):
            self.echo(f"[{i}/{total}] {step.component} {step.version}: cached ({step.key[:12]})")
            return StepResult(step.component, CACHED, (), 0.0)
        if step.action == CACHED:  # the plan saw it cached; the wheelhouse no longer holds it intact
            step = dataclasses.replace(step, action=ADOPT if step.adopt else BUILD)
        # One process at a time per build key: its work dir, venv and staged wheels are shared by
        # every wheelhouse using this cache; held until the wheels are published.
        with self._key_lock(step):
            if not stopping and not forced and self.wheelhouse.is_cached(step.key):
                # Another process built and published this key while this one waited for it.
                self.echo(f"[{i}/{total}] {step.component} {step.version}: cached ({step.key[:12]}), "
                          "published by another process meanwhile")
                return StepResult(step.component, CACHED, (), time.monotonic() - started)
            log = self.logs / f"{step.component}-{step.key[:12]}.log"
            timings = Timings(self.opts.cache_dir)
            previous = timings.previous(step.component) if step.action == BUILD else None
            estimate = f"; previous build took {fmt_duration(previous)}" if previous else ""
            self.echo(f"[{i}/{total}] {step.component} {step.version}: {step.action}"
                      f"{' (--rebuild)' if forced else ''} (log: {log}{estimate})")
            recipe = self.recipes[step.component].recipe
            if log.exists() and not self._resuming(step):
                log.unlink()
            runner = Runner(step.component, log, verbose=self.opts.verbose,
                            base_env=inherited_environ(os.environ, recipe.pass_env))
            # From here, not from `started`: waiting for another process's key lock is no part of
            # this step's time, its ETA or the duration the next build is estimated from.
            working = time.monotonic()
            runner.step = StepClock(working, previous)  # heartbeats show step time and ETA
            runner.hide(step.secrets.values())  # a secret passed to the build never reaches its log
            runner.set_phase("adopt" if step.action == ADOPT else "fetch")
            with runner.showing():  # the live status line stays up between commands too
                try:
                    built = self._produce(i, step, runner, stopping, started)
                except (FactoryError, KeyboardInterrupt):
                    raise
                except Exception as e:  # noqa: BLE001 -- an adopt's or a staged copy's OSError: the step's failure
                    raise BuildError(step_failure(step.component, runner.status.phase, e)) from None
                if isinstance(built, StepResult):
                    return built  # stopped on purpose (--until)
                # the build's own time: neither the key lock's wait before nor the wheelhouse lock's after
                build_took = time.monotonic() - working
                runner.set_phase("publish")
                published = self._publish(step, built, forced, log)
        took = time.monotonic() - started
        if step.action == BUILD and not built.from_staged:
            timings.record(step.component, build_took, version=step.version, key=step.key)
        extra = f" ({built.ccache.summary()})" if built.ccache is not None else ""
        self.echo(f"[{i}/{total}] {step.component}: done in {took:.1f}s{extra} -> "
                  + ", ".join(w.path.name for w in published))
        return StepResult(step.component, step.action, tuple(w.path.name for w in published), took, str(log),
                          built.bytes_saved)

    def _produce(self, i: int, step: Step, runner: Runner, stopping: bool, started: float) -> BuiltStep | StepResult:
        """The step's wheels, ready to publish: adopted, left staged by an earlier run that could not
        publish, or built; a StepResult when --until stopped the build on purpose."""
        total = len(self.plan.steps)
        if step.action == ADOPT:
            wheels = [self._adopted_wheel(step, runner)]
            built = BuiltStep(wheels, 0, {"origin": "adopted", "from": step.adopt})
            if audits := audit_wheels(step, wheels, self.plan.target.cuda_arch_list, runner, strict=False,
                                      echo=self.echo):
                built.origin["device_code"] = audits
            return built
        if (staged := self._staged(step)) is not None and self._published(step, staged):
            # Left by a run stopped just after it published them: nothing new to publish, and a
            # --rebuild means build.
            shutil.rmtree(self._staged_dir(step), ignore_errors=True)
            staged = None
        if staged is not None:
            self.echo(f"[{i}/{total}] {step.component}: publishing the wheels an earlier run built "
                      f"(staged/{step.key[:12]})")
            return staged
        try:
            built = StepBuild(step, runner, self._services(), until=self.opts.until if stopping else None,
                              fresh=self.opts.fresh).run()
        except StoppedAfter as stop:
            took = time.monotonic() - started
            self.echo(f"[{i}/{total}] {step.component}: stopped after {stop.phase} in {took:.1f}s "
                      f"(nothing published); work tree: {stop.work}")
            return StepResult(step.component, f"until-{stop.phase}", (), took, str(runner.log_path))
        self._remember_staged(step, built)
        return built

    def _publish(self, step: Step, built: BuiltStep, forced: bool, log: Path) -> list:
        """Into the wheelhouse under its lock (seconds); the staged copy goes once published."""
        def waiting(holder: str) -> None:
            self.echo(f"[{step.component}] built; waiting to publish: the wheelhouse lock is held by {holder}")

        try:
            with self.wheelhouse.lock(timeout=self.opts.wait, on_wait=waiting):
                if forced:  # same key, maybe the same file name: the old build goes to attic/ first
                    self.wheelhouse.quarantine(sorted(n for n, e in self.wheelhouse.manifest().items()
                                                      if e.get("key") == step.key),
                                               same_as={sha256_file(w) for w in built.wheels})
                published = self.wheelhouse.publish(built.wheels, built.origin | {
                    "component": step.component, "key": step.key, "inputs": step.key_inputs,
                    "log": str(log), "bytes_stripped": built.bytes_saved})
        except Exception as e:
            if not isinstance(e, FactoryError):  # a full disk, a file in the way: the step's failure
                e = BuildError(step_failure(step.component, "publish", e))
            if built.origin.get("origin") == "built":
                e.args = (f"{e.args[0] if e.args else e}\nthe built wheels stay in {self._staged_dir(step)}: "
                          "the next run publishes them without building again",)
            raise e from None
        except KeyboardInterrupt:
            # A stop signal held back while the wheels moved in arrives once they are in: the
            # publish finished, so say so and drop the staged copy (a --rebuild after this must
            # build, not publish the same wheels again); then stop as asked.
            if self._published(step, built):
                shutil.rmtree(self._staged_dir(step), ignore_errors=True)
                self.echo(f"[{step.component}] published {', '.join(w.name for w in built.wheels)} before the "
                          "interrupt took effect")
            raise
        # Published: the wheelhouse holds the only copy now; staged/ would keep a second one
        # (GBs for torch) forever.
        shutil.rmtree(self._staged_dir(step), ignore_errors=True)
        return published

    def _published(self, step: Step, built: BuiltStep) -> bool:
        """Whether the wheelhouse lists these very wheels (by sha256) under the step's key."""
        try:
            listed = {e["sha256"] for e in self.wheelhouse.manifest().values() if e.get("key") == step.key}
            return bool(built.wheels) and all(w.is_file() and sha256_file(w) in listed for w in built.wheels)
        except (OSError, FactoryError):
            return False

    # -- helpers -------------------------------------------------------------------------------

    def _services(self) -> StepServices:
        return StepServices(plan=self.plan, recipes=self.recipes, host=self.host, wheelhouse=self.wheelhouse,
                            sources=self.sources, installer=self.installer, cache_dir=self.opts.cache_dir,
                            python=self.python, index_url=self.opts.index_url, offline=self.opts.offline,
                            jobs=self.opts.jobs, keep_work=self.opts.keep_work, toolkit=self.toolkit,
                            toolkits=self.toolkits, ccache=self._ccache_for, echo=self.echo, cross=self.cross)

    def _ccache_for(self, runner: Runner) -> str | None:
        if not self._ccache:
            self._ccache.append(ensure_ccache(self.opts.cache_dir, runner, self.python, os.uname().machine,
                                              offline=self.opts.offline))
        return self._ccache[0]

    def _work_dir(self, step: Step) -> Path:
        return work_dir(self.opts.cache_dir, step)

    def _resuming(self, step: Step) -> bool:
        """Whether a kept work tree of this key may be resumed (its log is then continued)."""
        return not self.opts.fresh and bool(read_state(self._work_dir(step)).get("stopped"))

    def _staged_dir(self, step: Step) -> Path:
        return CacheLayout(self.opts.cache_dir).staged_step(step.key)

    def _remember_staged(self, step: Step, built: BuiltStep) -> None:
        """What publishing needs besides the wheels, next to them: a run that built but could not
        publish (the lock's --wait ran out, Ctrl-C) leaves a complete step for the next run."""
        (self._staged_dir(step) / "step.json").write_text(json.dumps({
            "key": step.key, "wheels": [w.name for w in built.wheels], "bytes_saved": built.bytes_saved,
            "origin": built.origin}))

    def _staged(self, step: Step) -> BuiltStep | None:
        record = self._staged_dir(step) / "step.json"
        if self.opts.fresh or not record.exists():
            return None
        try:
            data = json.loads(record.read_text())
            wheels = [self._staged_dir(step) / n for n in data["wheels"]]
        except (ValueError, KeyError, TypeError):
            return None
        if data.get("key") != step.key or not wheels or not all(w.is_file() for w in wheels):
            return None
        return BuiltStep(wheels, int(data.get("bytes_saved", 0)), dict(data["origin"]), from_staged=True)

    def _key_lock(self, step: Step) -> contextlib.AbstractContextManager[None]:
        """The per-key lock in the cache (work/<component>-<key>.lock): a second build of the same
        key, into this or another wheelhouse, waits here and says for whom."""
        work = self._work_dir(step)
        return file_lock(work.parent / f"{work.name}.lock", on_wait=lambda holder: self.echo(
            f"[{step.component}] waiting: {work} is in use by another build of the same key ({holder})"))

    def _cached(self, step: Step) -> bool:
        """Whether the step's wheels are in the wheelhouse and still the files the manifest recorded
        (checked again here, whatever the plan said). A wheel that changed is reported with both
        hashes and moved to attic/ (under the wheelhouse lock), and the step runs again."""
        bad = [m for m in self.wheelhouse.mismatches(step.key, full=self.opts.verify) if m.actual != "missing"]
        if bad:
            with self.wheelhouse.lock(timeout=self.opts.wait, on_wait=lambda holder: self.echo(
                    f"[{step.component}] waiting for the wheelhouse lock, held by {holder}")):
                self.wheelhouse.quarantine([m.name for m in bad])
            for m in bad:
                self.echo(f"[{step.component}] {m.describe()}; moved to {self.wheelhouse.root / 'attic'}/, "
                          "building it again")
            return False
        return self.wheelhouse.is_cached(step.key)

    def _adopted_wheel(self, step: Step, runner: Runner) -> Path:
        return adopted_wheel(step, self.recipes[step.component].recipe, self.plan.target, runner,
                             python=self.python, cache_dir=self.opts.cache_dir, index_url=self.opts.index_url,
                             offline=self.opts.offline)
