"""Running a plan: fetch sources, build each step in its own work directory and venv, repair,
and publish into the wheelhouse. Component knowledge stays in the recipes; this module only
knows the order of operations."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import string
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .adopt import check_adopted_wheel
from .audit import audit_wheel, judge
from .audit import render as render_audit
from .context import BuildContext
from .errors import BuildError, InputError
from .fetch import SourceCache
from .host import Host, default_jobs
from .interrupt import file_lock, pid_alive
from .patches import SOURCE, apply_patches
from .plan import ADOPT, BUILD, CACHED, Plan, Step
from .progress import StepClock, Timings, fmt_duration
from .provenance import build_provenance, fetched_source_info, stamp_wheel
from .recipe import LoadedRecipe
from .repair import repair_wheel
from .runner import Runner
from .sources import is_local_wheel
from .toolkit import ToolkitCache, WheelToolkit, nvcc_version, toolkits_dir
from .wheelhouse import Wheelhouse
from .wheelmeta import read_wheel

# Always in a build venv: the PEP 517 front end and the usual backends' basics.
BASE_BUILD_REQUIRES = ("build", "wheel", "setuptools")


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


# The phases of a build step, in order. `build --until PHASE` stops a target's step after PHASE:
# configure takes minutes where the build takes hours, and shows what the build would compile.
PHASES = ("fetch", "prepare", "configure", "build", "repair", "publish")


class StoppedAfter(Exception):
    """A step stopped on purpose after a phase (--until): its work tree is kept, nothing published."""

    def __init__(self, phase: str, work: Path):
        super().__init__(phase)
        self.phase = phase
        self.work = work


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
                 options: ExecOptions, echo: Callable[[str], None] = print, toolkit: WheelToolkit | None = None):
        self.plan = plan
        self.wheelhouse = wheelhouse
        self.recipes = recipes
        # The CUDA toolkit builds use: assembled from wheels (the default), or the host's (None).
        # Its root's path is known before it is assembled (content-addressed), so every step and
        # ${cuda_home} see it as the host's CUDA home; _step_env assembles it before first use.
        self.toolkit = toolkit
        self.toolkits = ToolkitCache(toolkits_dir(options.cache_dir), options.index_url)
        if toolkit is not None:
            host = dataclasses.replace(host, cuda_home=str(self.toolkits.root_of(toolkit)), toolkit=toolkit.label)
        self.host = host
        self._nvcc: dict[str, str] = {}  # step key -> nvcc version read in its build (manifest "nvcc")
        self.opts = options
        self.echo = echo
        self.sources = SourceCache(options.cache_dir, options.index_url)
        self.pydeps = options.cache_dir / "pydeps"
        self.logs = options.cache_dir / "logs"
        self._python: str | None = None

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
            deps = [str(w) for d in step.build_with for w in known.get(d, [])]
            self._download_requirements(runner, self.python, deps + self._build_requirements(step, tree))

    def build(self) -> list[StepResult]:
        """Build (or adopt) every step not already in the wheelhouse, in order."""
        results = []
        total = len(self.plan.steps)
        if any(s.action != CACHED for s in self.plan.steps):
            self.python  # noqa: B018 -- fail on a missing interpreter before building anything
        with self.wheelhouse.lock(on_wait=lambda: self.echo("waiting for another wheelfactory process "
                                                            f"to release {self.wheelhouse.root}/.lock ...")):
            for i, step in enumerate(self.plan.steps, 1):
                started = time.monotonic()
                stopping = self.opts.until is not None and step.component in self.opts.until_steps
                forced = step.component in self.opts.rebuild
                if not stopping and not forced and self._cached(step):
                    self.echo(f"[{i}/{total}] {step.component} {step.version}: cached ({step.key[:12]})")
                    results.append(StepResult(step.component, CACHED, (), 0.0))
                    continue
                if step.action == CACHED:  # the plan saw it cached; the wheelhouse no longer holds it intact
                    step = dataclasses.replace(step, action=ADOPT if step.adopt else BUILD)
                log = self.logs / f"{step.component}-{step.key[:12]}.log"
                if log.exists():
                    log.unlink()
                timings = Timings(self.opts.cache_dir)
                previous = timings.previous(step.component) if step.action == BUILD else None
                estimate = f"; previous build took {fmt_duration(previous)}" if previous else ""
                self.echo(f"[{i}/{total}] {step.component} {step.version}: {step.action}"
                          f"{' (--rebuild)' if forced else ''} (log: {log}{estimate})")
                runner = Runner(step.component, log, verbose=self.opts.verbose)
                runner.step = StepClock(started, previous)  # heartbeats show step time and ETA
                # One process at a time per build key: its work dir, venv and staged wheels are shared
                # by every wheelhouse using this cache; the lock is held until the wheels are published.
                with self._key_lock(step):
                    runner.hide(step.secrets.values())  # a secret passed to the build never reaches its log
                    if step.action == ADOPT:
                        wheels, saved = [self._adopted_wheel(step, runner)], 0
                        origin = {"origin": "adopted", "from": step.adopt}
                        if audits := self._audit_wheels(step, wheels, runner, strict=False):
                            origin["device_code"] = audits
                    else:
                        try:
                            wheels, saved, origin = self._build_step(step, runner,
                                                                     self.opts.until if stopping else None)
                        except StoppedAfter as stop:
                            took = time.monotonic() - started
                            self.echo(f"[{i}/{total}] {step.component}: stopped after {stop.phase} in {took:.1f}s "
                                      f"(nothing published); work tree: {stop.work}")
                            results.append(StepResult(step.component, f"until-{stop.phase}", (), took, str(log)))
                            continue
                    if forced:  # same key, maybe the same file name: the old build goes to attic/ first
                        self.wheelhouse.quarantine(sorted(n for n, e in self.wheelhouse.manifest().items()
                                                          if e.get("key") == step.key))
                    published = self.wheelhouse.publish(wheels, origin | {
                        "component": step.component, "key": step.key, "inputs": step.key_inputs,
                        "log": str(log), "bytes_stripped": saved})
                    # Published: the wheelhouse holds the only copy now; staged/ would keep a second
                    # one (GBs for torch) forever.
                    shutil.rmtree(self.opts.cache_dir / "staged" / step.key[:12], ignore_errors=True)
                took = time.monotonic() - started
                if step.action == BUILD:
                    timings.record(step.component, took, version=step.version, key=step.key)
                self.echo(f"[{i}/{total}] {step.component}: done in {took:.1f}s -> "
                          + ", ".join(w.path.name for w in published))
                results.append(StepResult(step.component, step.action, tuple(w.path.name for w in published),
                                          took, str(log), saved))
        return results

    def _work_dir(self, step: Step) -> Path:
        return self.opts.cache_dir / "work" / f"{step.component}-{step.key[:12]}"

    def _key_lock(self, step: Step) -> contextlib.AbstractContextManager[None]:
        """The per-key lock in the cache (work/<component>-<key>.lock): a second build of the same
        key, into this or another wheelhouse, waits here and says for whom."""
        work = self._work_dir(step)
        return file_lock(work.parent / f"{work.name}.lock", on_wait=lambda holder: self.echo(
            f"[{step.component}] waiting: {work} is in use by another build of the same key ({holder})"))

    def _cached(self, step: Step) -> bool:
        """Whether the step's wheels are in the wheelhouse and still the files the manifest recorded
        (checked again here, under the lock, whatever the plan said). A wheel that changed is
        reported with both hashes and moved to attic/, and the step runs again."""
        bad = [m for m in self.wheelhouse.mismatches(step.key, full=self.opts.verify) if m.actual != "missing"]
        if bad:
            self.wheelhouse.quarantine([m.name for m in bad])
            for m in bad:
                self.echo(f"[{step.component}] {m.describe()}; moved to {self.wheelhouse.root / 'attic'}/, "
                          "building it again")
            return False
        return self.wheelhouse.is_cached(step.key)

    # -- steps ---------------------------------------------------------------------------------

    def _build_step(self, step: Step, runner: Runner,
                    until: str | None = None) -> tuple[list[Path], int, dict[str, object]]:
        """fetch, prepare, configure, build, repair (publish is the caller's); `until` stops after
        the named phase by raising StoppedAfter, with the work tree kept."""
        loaded = self.recipes[step.component]
        recipe = loaded.recipe
        assert step.source is not None

        def done(phase: str) -> None:
            runner.note(f"phase {phase} done")
            if until == phase:
                raise StoppedAfter(phase, work)

        # fetch
        tree = self.sources.fetch(step.source, runner, offline=self.opts.offline)
        work = self._work_dir(step)
        fresh_dir(work)  # a dead run's leftovers (venv included) are moved aside, never a FileExistsError
        done("fetch")
        # prepare: a private copy of the source, patched, the venv, the recipe's own edits
        src = work / "src"
        shutil.copytree(tree, src, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        apply_patches(src, step.patches.get(SOURCE, ()), runner, step.component)
        venv = work / "venv"
        runner.run([self.python, "-m", "venv", venv])
        jobs = self.opts.jobs or default_jobs(self.host, step.mem_per_job_gb)
        versions = {n: c.version for n, c in self.plan.release.components.items()} | dict(self.plan.pins)
        ctx = BuildContext(step, self.plan.target, src, work, work / "dist", venv, self.host.cuda_home, jobs,
                           {}, runner, self.opts.offline, self.opts.cache_dir, versions, self.host.cpus,
                           echo=self.echo)
        ctx.dist.mkdir()
        ctx.env = self._step_env(step, ctx)
        # A secret's value is not written into the work tree: the script takes it from the shell.
        (work / "build_env.sh").write_text("".join(
            f'export {k}="${{{k}:?{k} is a secret of this build; export it first}}"\n' if k in step.secrets
            else f"export {k}={_sh(v)}\n" for k, v in sorted(ctx.env.items())) + f"cd {_sh(str(src))}\n")
        try:
            if (prepare := loaded.hook("prepare")) is not None:
                prepare(ctx)
            self._install_build_venv(step, ctx, runner)
            done("prepare")
            # configure: the build system's own configure step, where the recipe has one; it
            # reports (and checks) the device code the build would compile
            if (configure := loaded.hook("configure")) is not None:
                configure(ctx)
            elif until == "configure":
                runner.note("the recipe has no separate configure step: its build configures and compiles at once")
            done("configure")
            build = loaded.hook("build")
            wheels = build(ctx) if build is not None else ctx.build_wheel()
            if not wheels:
                raise BuildError(f"[{step.component}] the build produced no wheel in {ctx.dist}")
            self._check_outputs(step, recipe.outputs + recipe.optional_outputs, recipe.outputs, wheels)
            done("build")
            saved = 0
            repaired = []
            for wheel in wheels:
                report = repair_wheel(wheel, recipe.repair, step.component, keep_debug=step.keep_debug,
                                      runner=runner, work=work)
                saved += report.bytes_saved
                repaired.append(report.wheel)
                if report.stripped_files:
                    runner.note(f"stripped {report.stripped_files} shared objects in {wheel.name}, "
                                f"saved {report.bytes_saved} bytes")
            wheels = repaired
            # Provenance goes in after repair (which may rewrite or rename a wheel) and before the
            # audit, so that the audited bytes are the published ones.
            record = build_provenance(step, self.plan.target, venv=venv, nvcc=self._nvcc.get(step.key),
                                      source_info=fetched_source_info(tree))
            for wheel in wheels:
                stamp_wheel(wheel, record)
            # The finished wheels' device code, held against the same rules as the configure plan.
            audits = self._audit_wheels(step, wheels, runner, strict=True)
            done("repair")
        except BaseException as e:
            if isinstance(e, BuildError):
                raise BuildError(f"{e}\nthe work tree is kept at {work}; re-enter it with "
                                 f"`source {work}/build_env.sh`") from None
            raise
        # The wheels move out before the work tree goes.
        keep = self.opts.cache_dir / "staged" / step.key[:12]
        fresh_dir(keep)
        staged = [Path(shutil.move(str(w), keep / w.name)) for w in wheels]
        if not self.opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        origin: dict[str, object] = {"origin": "built", "from": step.source.describe()}
        if step.key in self._nvcc:
            origin["nvcc"] = self._nvcc[step.key]  # provenance: the nvcc this build ran, as it reported
        if ctx.device_code is not None:
            origin["device_code_plan"] = ctx.device_code
        if audits:
            origin["device_code"] = audits
        marker = tree / ".wf-source.json"
        if marker.exists():
            origin["source_info"] = json.loads(marker.read_text())
        return staged, saved, origin

    def _audit_wheels(self, step: Step, wheels: list[Path], runner: Runner, *, strict: bool) -> dict[str, object]:
        """Per wheel with device code: bytes per arch and shared object (for the manifest), judged
        against the release's arch list. A built wheel that contradicts it fails (strict); an
        adopted one is the user's choice, so it is reported."""
        arch_list = self.plan.target.cuda_arch_list
        found: dict[str, object] = {}
        for wheel in wheels:
            result = audit_wheel(wheel)
            if not result.objects:
                continue
            verdict = judge(result, arch_list)
            found[wheel.name] = result.to_json() | {"verdict": verdict.to_json()}
            for line in render_audit(result, verdict).splitlines():
                runner.note(f"audit: {line}")
            if not verdict.ok:
                problems = "; ".join(f"{o.path}: {', '.join(o.problems())}" for o in verdict.failures)
                message = (f"[{step.component}] {wheel.name} contradicts the release's arch list "
                           f"{';'.join(arch_list)}: {problems}")
                if strict:
                    raise BuildError(message + f"\n(`wheelfactory inspect {wheel} --arch "
                                     f"{' --arch '.join(arch_list)}` shows the table)")
                self.echo(f"warning: {message}")
        return found

    def _step_env(self, step: Step, ctx: BuildContext) -> dict[str, str]:
        """The step's environment with its ${placeholders} filled in, plus the runtime-only settings
        (jobs, PATH, ccache) that never enter the build key."""
        self._prepare_cuda(step, ctx)
        values = {"site": str(ctx.site), "src": str(ctx.src), "work": str(ctx.work),
                  "cuda_home": self.host.cuda_home or "", "cache": str(self.opts.cache_dir)}
        for name, extra in step.extra_sources.items():
            tree = self.sources.fetch(extra, ctx.runner, offline=self.opts.offline)
            if step.patches.get(name):
                # The cache's tree is shared by every build: patch a private copy of it.
                copy = ctx.work / "patched" / name
                if not copy.exists():
                    shutil.copytree(tree, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
                    apply_patches(copy, step.patches[name], ctx.runner, step.component)
                tree = copy
            values[f"source_{name}"] = str(tree)
            ctx.trees[name] = tree
        env = {}
        for k, v in step.env.items():
            try:
                env[k] = string.Template(v).substitute(values)
            except (KeyError, ValueError) as e:
                raise InputError(f"[{step.component}] env {k}={v!r}: unknown placeholder {e}; "
                                 f"known: {', '.join('${' + n + '}' for n in values)}") from None
        env |= step.secrets  # the values behind the plan's *** (secretenv.py), for the build only
        path = [str(ctx.venv / "bin")] + ([f"{self.host.cuda_home}/bin"] if self.host.cuda_home else [])
        env |= {
            "PATH": os.pathsep.join(path + [os.environ.get("PATH", "")]),
            "VIRTUAL_ENV": str(ctx.venv),
            "MAX_JOBS": str(ctx.jobs),
            "CMAKE_BUILD_PARALLEL_LEVEL": str(ctx.jobs),
            # Fixed archive timestamps: the same inputs give byte-identical wheels.
            "SOURCE_DATE_EPOCH": "315532800",
        }
        if self.host.cuda_home:
            env.setdefault("CUDA_HOME", self.host.cuda_home)
            # Every build system's way to find the toolkit, so none falls back to a host copy:
            # CMake's CUDA language (CUDACXX), FindCUDAToolkit (CUDAToolkit_ROOT), older CMake
            # and torch's cpp_extension (CUDA_TOOLKIT_ROOT_DIR, CUDA_HOME).
            env.setdefault("CUDACXX", f"{self.host.cuda_home}/bin/nvcc")
            env.setdefault("CUDAToolkit_ROOT", self.host.cuda_home)
            env.setdefault("CUDA_TOOLKIT_ROOT_DIR", self.host.cuda_home)
        if shutil.which("ccache"):
            # Object files survive version bumps: a rebuild recompiles only what changed.
            env |= {"CCACHE_DIR": str(self.opts.cache_dir / "ccache"), "CCACHE_BASEDIR": str(ctx.work),
                    "CCACHE_NOHASHDIR": "1", "CMAKE_C_COMPILER_LAUNCHER": "ccache",
                    "CMAKE_CXX_COMPILER_LAUNCHER": "ccache", "CMAKE_CUDA_COMPILER_LAUNCHER": "ccache"}
        if self.opts.offline:
            env |= {"PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1", "FETCHCONTENT_FULLY_DISCONNECTED": "ON"}
        return env

    def _prepare_cuda(self, step: Step, ctx: BuildContext) -> None:
        """Assemble the wheel toolkit if needed, and read the nvcc version this build will use from
        `$CUDA_HOME/bin/nvcc --version` (logged, and recorded in the manifest)."""
        if self.toolkit is not None:
            self.toolkits.ensure(self.toolkit, offline=self.opts.offline, echo=self.echo)
        if not self.host.cuda_home or not Path(self.host.cuda_home, "bin", "nvcc").exists():
            return
        out = ctx.runner.run([Path(self.host.cuda_home, "bin", "nvcc"), "--version"], capture=True, check=False)
        version = nvcc_version(out)
        if version:
            source = "toolkit from wheels" if self.toolkit is not None else "host toolkit (--system-cuda)"
            ctx.runner.note(f"nvcc {version} at {self.host.cuda_home} ({source})")
            self._nvcc[step.key] = version

    def _dep_wheels(self, step: Step) -> list[Path]:
        files: list[Path] = []
        for dep in step.build_with:
            found = self.wheelhouse.files_for_key(self.plan.step(dep).key)
            if found is None:
                raise BuildError(f"[{step.component}] dependency {dep} is not in the wheelhouse; build it first")
            files += found
        return files

    def _build_requirements(self, step: Step, tree: Path) -> list[str]:
        """Build requirements from PyPI: the recipe's, plus the source's pyproject [build-system]
        requires minus anything a dependency component provides (torch comes from the wheelhouse)."""
        provided = {canonicalize_name(o) for dep in step.depends_on for o in self.recipes[dep].recipe.outputs}
        reqs = list(BASE_BUILD_REQUIRES) + list(step.build_requires)
        pyproject = tree / "pyproject.toml"
        if pyproject.exists():
            try:
                declared = tomllib.loads(pyproject.read_text()).get("build-system", {}).get("requires", [])
            except tomllib.TOMLDecodeError as e:
                raise BuildError(f"{pyproject}: not valid TOML: {e}") from None
            for text in declared:
                try:
                    if canonicalize_name(Requirement(text).name) not in provided:
                        reqs.append(text)
                except InvalidRequirement:
                    raise BuildError(f"{pyproject}: bad build requirement {text!r}") from None
        return reqs

    def _download_requirements(self, runner: Runner, python: str, reqs: list[str]) -> None:
        """Fill the pip cache directory pydeps/ so later installs need no index."""
        self.pydeps.mkdir(parents=True, exist_ok=True)
        runner.run([python, "-m", "pip", "download", "-q", "--prefer-binary", "-d", self.pydeps,
                    "--find-links", self.wheelhouse.root, "--index-url", self.opts.index_url, *reqs])
        # pip copies local wheels it was given into -d; the wheelhouse stays their only home.
        for name in list(self.wheelhouse.manifest()) + [Path(r).name for r in reqs if r.endswith(".whl")]:
            (self.pydeps / name).unlink(missing_ok=True)

    def _install_build_venv(self, step: Step, ctx: BuildContext, runner: Runner) -> None:
        """Install the dependency components' own wheels (by path, so never a PyPI copy) and the
        build requirements into the step's venv, from the wheelhouse and pydeps/ only."""
        deps = self._dep_wheels(step)
        reqs = [str(p) for p in deps] + self._build_requirements(step, ctx.src)
        if not self.opts.offline:
            self._download_requirements(runner, str(ctx.python), reqs)
        try:
            runner.run([ctx.python, "-m", "pip", "install", "-q", "--no-index", "--find-links", self.wheelhouse.root,
                        "--find-links", self.pydeps, *reqs],
                       env={"PATH": ctx.env["PATH"]})
        except BuildError as e:
            if not self.opts.offline:
                raise
            raise BuildError(f"{e}\nthe build requirements are not all in {self.pydeps}; run `wheelfactory fetch "
                             f"--release {self.plan.release.path}` while online first") from None
        for wheel in deps:
            check_installed_from(ctx.site, wheel)

    def _adopted_wheel(self, step: Step, runner: Runner) -> Path:
        """The wheel a release adopts instead of building: a local file, a URL or a requirement."""
        assert step.adopt is not None
        spec = step.adopt
        if is_local_wheel(spec):
            path = Path(spec)
            if not path.is_file():
                raise InputError(f"[{step.component}] adopt = {spec!r}: no such wheel file")
            wheel = path
        else:
            dest = self.opts.cache_dir / "adopt" / step.key[:12]
            have = list(dest.glob("*.whl")) if dest.exists() else []
            if not have:
                if self.opts.offline:
                    raise BuildError(f"[{step.component}] adopted wheel {spec!r} is not in the cache and --offline "
                                     "forbids downloading; run `wheelfactory fetch` first")
                dest.mkdir(parents=True, exist_ok=True)
                runner.run([self.python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                            "--index-url", self.opts.index_url, "-d", dest, spec])
                have = list(dest.glob("*.whl"))
            if len(have) != 1:
                raise BuildError(f"[{step.component}] adopting {spec!r} gave {len(have)} wheels, expected one")
            wheel = have[0]
        self._check_outputs(step, self.recipes[step.component].recipe.outputs, (), [wheel])
        check_adopted_wheel(wheel, step.component, step.version, self.recipes[step.component].recipe,
                            self.plan.target)
        return wheel

    def _check_outputs(self, step: Step, allowed: tuple[str, ...], required: tuple[str, ...],
                       wheels: list[Path]) -> None:
        names = {read_wheel(w).dist for w in wheels}
        allowed_c = {canonicalize_name(n) for n in allowed}
        extra = names - allowed_c
        if extra:
            raise BuildError(f"[{step.component}] produced {sorted(extra)}, which the recipe does not declare "
                             f"(outputs: {', '.join(allowed)})")
        missing = {canonicalize_name(n) for n in required} - names
        if missing:
            raise BuildError(f"[{step.component}] declared output(s) {sorted(missing)} were not produced")


def fresh_dir(path: Path) -> None:
    """Make `path` an empty directory. What is there is renamed away first, then deleted: a run
    killed with SIGKILL can leave commands writing into it, so deleting in place may fail or race
    with them. Renamed leftovers of dead processes (.trash-<pid>-*) are swept here too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(".trash-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    if path.exists() or path.is_symlink():
        trash = path.parent / f".trash-{os.getpid()}-{time.time_ns()}-{path.name}"
        try:
            os.replace(path, trash)
        except OSError as e:
            raise BuildError(f"{path} is left from an earlier run and cannot be moved aside ({e}); "
                             "remove it and run again") from None
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink()
    path.mkdir()


def check_installed_from(site: Path, wheel: Path) -> None:
    """Prove a venv's copy of a distribution came from this exact wheelhouse file (PEP 610 record)."""
    info = read_wheel(wheel)
    dist_info = site / f"{info.dist.replace('-', '_')}-{info.version}.dist-info"
    direct = dist_info / "direct_url.json"
    if not direct.exists():
        raise BuildError(f"{info.dist} {info.version} in {site} was not installed from {wheel} "
                         "(no direct_url.json); a copy from another index replaced the factory's wheel")
    url = json.loads(direct.read_text()).get("url", "")
    if Path(unquote(urlparse(url).path)).resolve() != wheel.resolve():
        raise BuildError(f"{info.dist} in {site} came from {url}, not the wheelhouse file {wheel}")


def _sh(value: str) -> str:
    return shlex.quote(value)
