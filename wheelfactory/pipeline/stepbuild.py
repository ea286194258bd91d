"""One build step, phase by phase: fetch → prepare → configure → build → repair (publishing is the
Executor's). Everything a step needs from the run comes in by keyword (StepServices), so the
phases can be driven by a test with a recording installer and no wheelhouse lock.

A work tree outlives a failure: `.wf-state.json` in it says which key prepared it and how the run
ended. The next run of the same key resumes a tree that a run left on purpose (a failed command,
Ctrl-C, `--until`): the source copy, its patches and the venv stay, and configure and build run
again in place, so ninja and make recompile only what is missing (ccache covers the rest).
A tree whose run died (SIGKILL: no end recorded, its commands may still be writing) is moved
aside instead; `--fresh` always starts over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from ..core.errors import BuildError
from ..core.interrupt import pid_alive, stop_leftover_groups
from ..host.facts import Host, default_jobs
from ..planning.context import BuildContext, FetchContext
from ..planning.plan import Plan, Step
from ..planning.recipe import LoadedRecipe
from ..run.progress import STEP_PHASES
from ..run.runner import Runner
from ..sources.fetch import SourceCache
from ..sources.patches import SOURCE, apply_patches
from ..store.wheelhouse import Wheelhouse
from ..toolchain.ccache import CacheStats, read_stats
from ..toolchain.crossbuild import CROSS, CrossSetup, CrossToolchain, prepare_toolchain
from ..toolchain.installer import Installer, build_requirements, check_installed_from, download
from ..toolchain.pydeps import link_pinned, pydeps_dir, read_pins, record_pins
from ..toolchain.toolkit import ToolkitCache, WheelToolkit, nvcc_version
from .buildenv import StepPaths, env_script, step_environment
from .outputs import audit_wheels, check_outputs
from .provenance import build_provenance, fetched_source_info, stamp_wheel
from .repair import repair_wheel

# The phases of a build step, in order (defined with the status line that shows them). `build
# --until PHASE` stops a target's step after PHASE: configure takes minutes where the build takes
# hours, and shows what the build would compile.
PHASES = STEP_PHASES
STATE_FILE = ".wf-state.json"
GROUPS_FILE = ".wf-groups"  # process groups of the commands running in the tree (runner.py)


class StoppedAfter(Exception):
    """A step stopped on purpose after a phase (--until): its work tree is kept, nothing published."""

    def __init__(self, phase: str, work: Path):
        super().__init__(phase)
        self.phase = phase
        self.work = work


@dataclass
class StepServices:
    """What a step uses that belongs to the whole run."""

    plan: Plan
    recipes: Mapping[str, LoadedRecipe]
    host: Host  # with cuda_home pointing at the toolkit builds use
    wheelhouse: Wheelhouse
    sources: SourceCache
    installer: Installer
    cache_dir: Path
    python: str  # the interpreter build venvs are made with
    index_url: str
    offline: bool = False
    jobs: int | None = None  # None: memory-aware default per recipe
    keep_work: bool = False
    toolkit: WheelToolkit | None = None
    toolkits: ToolkitCache | None = None
    ccache: Callable[[Runner], str | None] = lambda _runner: None
    echo: Callable[[str], None] = print
    cross: CrossSetup | None = None  # a cross build's target CUDA libraries (crossbuild.py)
    parent_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def pydeps(self) -> Path:
        """This index's build-requirements directory (one per index: pydeps.py says why)."""
        return pydeps_dir(self.cache_dir, self.index_url)

    def work_dir(self, step: Step) -> Path:
        return work_dir(self.cache_dir, step)


@dataclass(frozen=True)
class BuiltStep:
    wheels: list[Path]  # staged, ready to publish
    bytes_saved: int
    origin: dict[str, object]  # the manifest entry's build facts
    ccache: CacheStats | None = None
    resumed: bool = False
    from_staged: bool = False  # built by an earlier run that could not publish: nothing was built now


class StepBuild:
    def __init__(self, step: Step, runner: Runner, services: StepServices, *, until: str | None = None,
                 fresh: bool = False):
        self.step = step
        self.runner = runner
        self.s = services
        self.until = until
        self.fresh = fresh
        self.work = services.work_dir(step)
        self.nvcc: str | None = None
        self.cross: CrossToolchain | None = None  # a cross step's toolchain, made with its environment
        self._prepared = False  # the work tree holds this key's prepared source and venv
        self.pins: dict[str, str] | None = None  # the build requirements installed: file -> sha256

    def _done(self, phase: str) -> None:
        if self.until == phase:
            # not "phase X done": that moves the status line on to the next phase, which never starts
            self.runner.note(f"phase {phase} done; stopping here (--until {phase})")
            self._record(stopped=f"stopped after {phase} (--until)")
            raise StoppedAfter(phase, self.work)
        self.runner.note(f"phase {phase} done")

    # -- the phases ----------------------------------------------------------------------------

    def run(self) -> BuiltStep:
        """The step's phases; any exception a phase or a recipe hook raises (a FileExistsError of a
        hook run again on a resumed tree, a full disk) is the step's failure: a message naming the
        step, its phase and the work tree kept, never a traceback."""
        try:
            return self._run()
        except (StoppedAfter, BuildError):
            raise
        except Exception as e:  # noqa: BLE001 -- every other exception of a step is its failure message
            raise BuildError(self._failed(step_failure(self.step.component, self._phase(), e))) from None

    def _phase(self) -> str | None:
        return getattr(getattr(self.runner, "status", None), "phase", None)

    def _failed(self, message: str) -> str:
        """Record the tree as failed (resumable once prepared) and say where it is kept."""
        self._record(stopped="failed")
        if not self.work.is_dir():
            return message
        resume = " (the next run of this step resumes it; --fresh starts over)" if self._prepared else ""
        return (f"{message}\nthe work tree is kept at {self.work}{resume}; re-enter it with "
                f"`source {self.work}/build_env.sh`")

    def _run(self) -> BuiltStep:
        step, runner = self.step, self.runner
        loaded = self.s.recipes[step.component]
        recipe = loaded.recipe
        assert step.source is not None
        # fetch
        tree = self.s.sources.fetch(step.source, runner, offline=self.s.offline)
        if (fetch := loaded.hook("fetch")) is not None:  # the recipe's own fetch work (or its check, offline)
            fetch(FetchContext(step, tree, self.s.cache_dir, runner, offline=self.s.offline, echo=self.s.echo))
        self._stop_leftovers()
        resumed = self._prepared = self._resumable()
        self.runner.groups_file = self.work / GROUPS_FILE if resumed else None
        if resumed:
            self._record()  # running again: a death from here on must not look like a clean stop
        else:
            fresh_dir(self.work)  # a dead run's leftovers (venv included) are moved aside, never a FileExistsError
            self.runner.groups_file = self.work / GROUPS_FILE
        self._done("fetch")
        # prepare: a private copy of the source, patched, the venv, the recipe's own edits
        ctx = self._context()
        if resumed:
            shutil.rmtree(ctx.dist, ignore_errors=True)  # wheels of the run that failed are not this run's
        ctx.dist.mkdir(exist_ok=True)
        if not resumed:
            shutil.copytree(tree, ctx.src, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            apply_patches(ctx.src, step.patches.get(SOURCE, ()), runner, step.component)
            self.s.installer.create_venv(runner, self.s.python, ctx.venv, offline=self.s.offline,
                                         index_url=self.s.index_url)
        ctx.env = self._environment(ctx)
        (self.work / "build_env.sh").write_text(env_script(ctx.env, step.secrets, ctx.src))
        try:
            if not resumed:
                if (prepare := loaded.hook("prepare")) is not None:
                    prepare(ctx)
                self._install_build_venv(ctx)
                self._prepared = True
                self._record()  # prepared: from here on, a run that fails leaves a resumable tree
            self._done("prepare")
            # configure: the build system's own configure step, where the recipe has one; it
            # reports (and checks) the device code the build would compile
            if (configure := loaded.hook("configure")) is not None:
                configure(ctx)
            elif self.until == "configure":
                runner.note("the recipe has no separate configure step: its build configures and compiles at once")
            self._done("configure")
            ccache = self.s.ccache(runner)
            before = read_stats(ccache, self.s.cache_dir, runner) if ccache else None
            build = loaded.hook("build")
            wheels = build(ctx) if build is not None else ctx.build_wheel()
            after = read_stats(ccache, self.s.cache_dir, runner) if ccache else None
            stats = after - before if after is not None and before is not None else None
            if stats is not None:
                runner.note(stats.summary())
            if not wheels:
                raise BuildError(f"[{step.component}] the build produced no wheel in {ctx.dist}")
            check_outputs(step, recipe.outputs + recipe.optional_outputs, recipe.outputs, wheels)
            self._done("build")
            wheels, saved = self._repair(wheels, tree, ctx)
            # The finished wheels' device code, held against the same rules as the configure plan.
            audits = audit_wheels(step, wheels, self.s.plan.target.cuda_arch_list, runner, strict=True,
                                  echo=self.s.echo)
            self._done("repair")
        except StoppedAfter:
            raise
        except Exception as e:  # noqa: BLE001 -- a hook's own exception is the step's failure too
            text = str(e) if isinstance(e, BuildError) else step_failure(step.component, self._phase(), e)
            raise BuildError(self._failed(text)) from None
        except KeyboardInterrupt:
            self._record(stopped="interrupted")
            if self._prepared:  # say what stays, and how to go on or drop it (the CLI adds "interrupted")
                from .cachestore import fmt_bytes, tree_size

                self.s.echo(f"[{self.step.component}] interrupted: the work tree ({fmt_bytes(tree_size(self.work))}) "
                            f"is kept at {self.work}; the next run of this step resumes it, `--fresh` starts over, "
                            "`wheelfactory cache gc` removes it")
            raise
        staged = self._stage(wheels)
        origin: dict[str, object] = {"origin": "built", "from": step.source.describe()}
        if self.pins is not None:
            origin["build_requirements"] = self.pins  # what the build venv was filled with, by sha256
        if self.nvcc:
            origin["nvcc"] = self.nvcc  # provenance: the nvcc this build ran, as it reported
        if ctx.device_code is not None:
            origin["device_code_plan"] = ctx.device_code
        if audits:
            origin["device_code"] = audits
        marker = tree / ".wf-source.json"
        if marker.exists():
            origin["source_info"] = json.loads(marker.read_text())
        return BuiltStep(staged, saved, origin, stats, resumed)

    def _repair(self, wheels: list[Path], tree: Path, ctx: BuildContext) -> tuple[list[Path], int]:
        saved = 0
        repaired = []
        recipe = self.s.recipes[self.step.component].recipe
        for wheel in wheels:
            report = repair_wheel(wheel, recipe.repair, self.step.component, keep_debug=self.step.keep_debug,
                                  runner=self.runner, work=self.work,
                                  strip=self.cross.strip if self.cross is not None else "strip")
            saved += report.bytes_saved
            repaired.append(report.wheel)
            if report.stripped_files:
                self.runner.note(f"stripped {report.stripped_files} shared objects in {wheel.name}, "
                                 f"saved {report.bytes_saved} bytes")
        # Provenance goes in after repair (which may rewrite or rename a wheel) and before the
        # audit, so that the audited bytes are the published ones.
        record = build_provenance(self.step, self.s.plan.target, venv=ctx.venv, nvcc=self.nvcc,
                                  source_info=fetched_source_info(tree))
        for wheel in repaired:
            stamp_wheel(wheel, record)
        return repaired, saved

    def _stage(self, wheels: list[Path]) -> list[Path]:
        """The wheels move out of the work tree (to staged/<key>) before the tree goes."""
        keep = self.s.cache_dir / "staged" / self.step.key[:12]
        fresh_dir(keep)
        staged = [Path(shutil.move(str(w), keep / w.name)) for w in wheels]
        if not self.s.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return staged

    # -- the work tree's state -----------------------------------------------------------------

    def _record(self, stopped: str | None = None) -> None:
        """Write the tree's state: prepared by this key and process; `stopped` says how a run that
        left it on purpose ended. Nothing before prepare finished is worth resuming."""
        if not self._prepared:
            return
        state: dict[str, object] = {"key": self.step.key, "prepared": True, "pid": os.getpid(), "at": time.time()}
        if stopped:
            state["stopped"] = stopped
        with contextlib.suppress(OSError):
            (self.work / STATE_FILE).write_text(json.dumps(state))

    def _stop_leftovers(self) -> None:
        """Commands a dead run of this key left running in its work tree (the per-key lock is ours,
        so no live run uses it) are stopped before anything else touches the tree."""
        stopped = stop_leftover_groups(self.work / GROUPS_FILE, str(self.work))
        if stopped:
            self.s.echo(f"[{self.step.component}] stopped {len(stopped)} command(s) a dead run left running in "
                        f"{self.work} (process group {', '.join(map(str, stopped))})")
            self.runner.note(f"stopped leftover process groups {stopped}")

    def _resumable(self) -> bool:
        if self.fresh or not self.work.is_dir():
            return False
        state = read_state(self.work)
        if state.get("key") != self.step.key or not state.get("prepared"):
            return False
        if not state.get("stopped"):
            # No end recorded: the run died (SIGKILL, OOM) or is still running elsewhere (the key
            # lock makes that impossible). Its commands may outlive it and write into the tree.
            if isinstance(state.get("pid"), int) and pid_alive(state["pid"]) and state["pid"] != os.getpid():
                return False
            self.s.echo(f"[{self.step.component}] the work tree {self.work} was left by a run that died; "
                        "starting over")
            return False
        self.s.echo(f"[{self.step.component}] resuming the work tree a run left ({state['stopped']}): "
                    "source, patches and venv kept, configure and build run again in place; --fresh starts over")
        self.runner.note(f"resuming {self.work} ({state['stopped']})")
        return True

    # -- prepare -------------------------------------------------------------------------------

    def _context(self) -> BuildContext:
        step = self.step
        jobs = self.s.jobs or default_jobs(self.s.host, step.mem_per_job_gb)
        release = self.s.plan.release
        versions = {n: c.version for n, c in release.components.items()} | dict(self.s.plan.pins)
        return BuildContext(step=step, target=self.s.plan.target, src=self.work / "src", work=self.work,
                            dist=self.work / "dist", venv=self.work / "venv", cuda_home=self.s.host.cuda_home,
                            jobs=jobs, env={}, runner=self.runner, offline=self.s.offline, cache=self.s.cache_dir,
                            versions=versions, cpus=self.s.host.cpus, echo=self.s.echo)

    def _environment(self, ctx: BuildContext) -> dict[str, str]:
        """The step's environment: the toolkit assembled (and its nvcc read), extra sources fetched
        (patched copies where the release patches them), then buildenv's composition."""
        self._prepare_cuda()
        for name, extra in self.step.extra_sources.items():
            tree = self.s.sources.fetch(extra, self.runner, offline=self.s.offline)
            if self.step.patches.get(name):
                # The cache's tree is shared by every build: patch a private copy of it.
                copy = ctx.work / "patched" / name
                if not copy.exists():
                    shutil.copytree(tree, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
                    apply_patches(copy, self.step.patches[name], self.runner, self.step.component)
                tree = copy
            ctx.trees[name] = tree
        paths = StepPaths(src=ctx.src, work=ctx.work, venv=ctx.venv, site=ctx.site, cache=self.s.cache_dir)
        ccache = self.s.ccache(self.runner)
        cross_env: dict[str, str] = {}
        if self.step.mode == CROSS:
            # This host's nvcc and the target's libraries as one CUDA root in the work tree, the
            # toolchain file beside it; the step's CUDA home (and ${cuda_home}) is that root.
            if self.s.cross is None or not self.s.host.cuda_home:
                raise BuildError(f"[{self.step.component}] a cross step needs this host's CUDA toolkit and the "
                                 "target's CUDA libraries; plan it with --cross")
            self.cross, toolchain_file = prepare_toolchain(
                Path(self.s.host.cuda_home), self.s.cross.root(self.s.toolkits or ToolkitCache(self.s.cache_dir)),
                ctx.work, self.s.cross.machine, ctx.site)
            ctx.cuda_home = str(self.cross.cuda_root)
            ctx.cross = self.cross
            cross_env = self.cross.environment(toolchain_file)
            self.runner.note(f"cross step for {self.cross.machine}: {self.cross.cxx} as host compiler of "
                             f"{self.cross.nvcc}, toolchain file {toolchain_file}")
        env = step_environment(self.step, paths, cuda_home=ctx.cuda_home, jobs=ctx.jobs,
                               offline=self.s.offline, ccache=ccache, trees=ctx.trees,
                               parent_path=self.s.parent_env.get("PATH", os.defpath))
        return env | cross_env

    def _prepare_cuda(self) -> None:
        """Assemble the wheel toolkit if needed, and read the nvcc version this build will use from
        `$CUDA_HOME/bin/nvcc --version` (logged, and recorded in the manifest)."""
        if self.s.toolkit is not None and self.s.toolkits is not None:
            self.s.toolkits.ensure(self.s.toolkit, offline=self.s.offline, echo=self.s.echo)
        if self.step.mode == CROSS and self.s.cross is not None and self.s.toolkits is not None:
            self.s.cross.ensure(self.s.toolkits, offline=self.s.offline, echo=self.s.echo)
        cuda_home = self.s.host.cuda_home
        if not cuda_home or not Path(cuda_home, "bin", "nvcc").exists():
            return
        out = self.runner.run([Path(cuda_home, "bin", "nvcc"), "--version"], capture=True, check=False)
        version = nvcc_version(out)
        if version:
            source = "toolkit from wheels" if self.s.toolkit is not None else "host toolkit (--system-cuda)"
            self.runner.note(f"nvcc {version} at {cuda_home} ({source})")
            self.nvcc = version

    def _install_build_venv(self, ctx: BuildContext) -> None:
        """Install the dependency components' own wheels (by path, so never a PyPI copy) and the
        build requirements into the step's venv, from the wheelhouse and pydeps/ only."""
        # Under the wheelhouse's read lock from the manifest read to the last check: a concurrent
        # `build --rebuild` of a dependency publishes (moving the old wheel to attic/) only after.
        with self.s.wheelhouse.reading(on_wait=lambda holder: self.runner.note(
                f"waiting to read the wheelhouse: a publish holds it ({holder})")):
            self._install_build_venv_locked(ctx)

    def _install_build_venv_locked(self, ctx: BuildContext) -> None:
        deps = dependency_wheels(self.step, self.s.plan, self.s.wheelhouse)
        reqs = [str(p) for p in deps] + step_build_requirements(self.step, ctx.src, self.s.recipes)
        # The step's own directory of build requirements: exactly the files pinned for it, never
        # the rest of the cache (pydeps.py).
        pinned = self.work / "build-requirements"
        if not self.s.offline:
            self.pins = download(self.runner, str(ctx.python), reqs, self.s.pydeps, wheelhouse=self.s.wheelhouse.root,
                                 index_url=self.s.index_url, local_names=self.s.wheelhouse.manifest(), into=pinned)
            record_pins(self.s.pydeps, reqs, self.pins)
        elif (pins := read_pins(self.s.pydeps, reqs)) is not None:
            self.pins = pins
            link_pinned(self.s.pydeps, pins, pinned)
        else:
            # Never pinned for exactly these requirements: `fetch` could not know the wheel of a
            # dependency built from source after it. This index's own directory stands in (never
            # another index's files); the manifest then records no build_requirements.
            self.runner.note(f"no pins for these build requirements (--offline): installing from {self.s.pydeps}")
            pinned = self.s.pydeps
        started = time.monotonic()
        try:
            # uv refuses a --find-links directory that does not exist (a first build's wheelhouse)
            links = [d for d in (self.s.wheelhouse.root, pinned) if d.is_dir()]
            self.s.installer.install(self.runner, ctx.python, reqs, links,
                                     env={"PATH": ctx.env["PATH"]} | ({"UV_OFFLINE": "1"} if self.s.offline else {}))
        except BuildError as e:
            if not self.s.offline:
                raise
            raise BuildError(f"{e}\nthe build requirements are not all in {self.s.pydeps}; run `wheelfactory fetch "
                             f"--release {self.s.plan.release.path}` while online first") from None
        self.runner.note(f"build venv filled with {self.s.installer.name} in {time.monotonic() - started:.1f}s")
        for wheel in deps:
            check_installed_from(ctx.site, wheel)


def step_failure(component: str, phase: str | None, e: BaseException) -> str:
    """An unexpected exception of a step as its one-line failure (a full disk said plainly)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" writing {e.filename}" if e.filename else ""
        return f"[{component}] {phase or 'build'}: no space left on the device{where}; free some space and run again"
    return f"[{component}] {phase or 'build'} failed: {type(e).__name__}: {e}"


def work_dir(cache_dir: Path, step: Step) -> Path:
    """A step's work tree in the cache, one per build key."""
    return cache_dir / "work" / f"{step.component}-{step.key[:12]}"


def dependency_wheels(step: Step, plan: Plan, wheelhouse: Wheelhouse) -> list[Path]:
    """The wheelhouse files of the components the step builds with; built before it, or an error."""
    files: list[Path] = []
    for dep in step.build_with:
        found = wheelhouse.files_for_key(plan.step(dep).key)
        if found is None:
            raise BuildError(f"[{step.component}] dependency {dep} is not in the wheelhouse; build it first")
        files += found
    return files


def step_build_requirements(step: Step, tree: Path, recipes: Mapping[str, LoadedRecipe]) -> list[str]:
    """The step's PyPI build requirements; what a dependency component provides is never among them."""
    provided = {canonicalize_name(o) for dep in step.depends_on for o in recipes[dep].recipe.outputs}
    return build_requirements(tree, step.build_requires, provided)


def read_state(work: Path) -> dict[str, object]:
    try:
        state = json.loads((work / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def fresh_dir(path: Path) -> None:
    """Make `path` an empty directory. What is there is renamed away first, then deleted: a run
    killed with SIGKILL can leave commands writing into it, so deleting in place may fail or race
    with them. Renamed leftovers of dead processes (.trash-<pid>-*) are swept here too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(".trash-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    trash = None
    if path.exists() or path.is_symlink():
        trash = path.parent / f".trash-{os.getpid()}-{time.time_ns()}-{path.name}"
        try:
            os.replace(path, trash)
        except OSError as e:
            raise BuildError(f"{path} is left from an earlier run and cannot be moved aside ({e}); "
                             "remove it and run again") from None
    # The new directory first, the old one deleted after: deleting a large tree takes a while,
    # and nothing may slip in between and make the path exist again.
    path.mkdir()
    if trash is not None:
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink()
