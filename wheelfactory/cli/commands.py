"""The `wheelfactory` command line: options and messages only; the work is in Factory."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from assemble.cli import images  # the image assembler; it only reads releases, plans and locks

from .. import __version__
from ..core.errors import BuildError, FactoryError, InputError
from ..core.grammar import check_git_ref, check_git_url, check_path_length, check_release_name, check_version_text
from ..core.interrupt import Interrupted, install_handlers
from ..lock.closure import lock_paths, lock_release
from ..lock.one_cuda import load_cuda_wheels
from ..lock.venv import create_venv
from ..pipeline.executor import PHASES, find_python
from ..pipeline.factory import DEFAULT_RELEASE, Factory, default_recipes_dir
from ..pipeline.installed import repack_installed
from ..planning.configurefirst import ConfigureFirst, check_dir, configure_first
from ..planning.plan import CACHED, Plan
from ..planning.rebuild import components_to_rebuild
from ..planning.release import Release, list_releases
from ..run.progress import BOARD, QUIET, output_mode_set
from ..run.runner import Runner
from ..sources.transport import INDEX_SCHEMES, check_git_transport, check_url
from ..toolchain.crossbuild import CROSS, EMULATED, NATIVE_ONLY, cross_blockers
from ..toolchain.installer import uv_cache_dir
from ..toolchain.pydeps import pydeps_dir
from ..toolchain.toolkit import is_wheel_label, mismatch_warning
from .globalopts import AFTER_COMMAND, GlobalOptionsGroup, accept_after_subcommand, show_envvars

# No auto_envvar_prefix: the environment variables are the ones declared on options (and shown in
# --help), not a WHEELFACTORY_<COMMAND>_<OPTION> for every option (--force included) behind the user's back.
CONTEXT = {"help_option_names": ["-h", "--help"]}
ALLOW_INSECURE_INDEX = "--allow-insecure-index"


def _echo(msg: str) -> None:
    # While live status rows are up (a build on a terminal), a message goes above them, never over
    # them: the toolkit's download lines, a waiting lock, a step's summary.
    if BOARD.active():
        BOARD.print(msg)
    else:
        click.echo(msg, err=True)


release_option = click.option("--release", "-r", default=DEFAULT_RELEASE, show_default=True,
                              envvar="WHEELFACTORY_RELEASE",
                              help="Release name (recipes/releases/NAME.toml) or path to a release TOML file.")
env_option = click.option("--env", "env", multiple=True, metavar="COMPONENT:KEY=VALUE",
                          help="Extra build environment for one component (repeatable; enters the build key). "
                               "For non-secret values: pass tokens with --secret-env (a KEY that looks secret, "
                               "such as *TOKEN*, *SECRET*, *PASSWORD*, *KEY, is treated as one and shown as ***).")


def _secret_env(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    # On the Factory, as --system-cuda: every planning command sees it without a new parameter.
    if value:
        ctx.find_object(Factory).secret_env = value


secret_env_option = click.option(
    "--secret-env", multiple=True, metavar="COMPONENT:NAME", expose_value=False, callback=_secret_env,
    help="Pass the environment variable NAME (a token) to COMPONENT's build (repeatable). Its value is read "
         "from this environment, shown as *** in plans, logs, build_env.sh and the manifest, and does not "
         "enter the build key (its name does). Other secrets of this environment are not passed to builds.")
source_dir_option = click.option("--source-dir", "source_dirs", multiple=True,
                                 metavar="COMPONENT[.EXTRA]=PATH",
                                 help="Build a component from a local checkout instead of its release source; "
                                      "COMPONENT.EXTRA=PATH replaces one of its extra sources "
                                      "(vllm.cutlass=~/cutlass).")
adopt_option = click.option("--adopt", "adopt", multiple=True, metavar="COMPONENT=WHEEL|REQUIREMENT",
                            help="Take a component as an existing wheel instead of building it (repeatable).")
targets_argument = click.argument("targets", nargs=-1)


def _use_system_cuda(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # Set on the Factory (made by the group before any subcommand option is parsed), so that
    # every command that plans sees it without one more parameter in each signature.
    if value:
        ctx.find_object(Factory).system_cuda = True


system_cuda_option = click.option(
    "--system-cuda", is_flag=True, expose_value=False, callback=_use_system_cuda, envvar="WHEELFACTORY_SYSTEM_CUDA",
    help="Build with this host's CUDA toolkit instead of the release's CUDA assembled from NVIDIA's wheels "
         "(enters the build key; give it to lock too, or set WHEELFACTORY_SYSTEM_CUDA=1).")


def _use_cross(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # On the Factory, as --system-cuda.
    if value:
        ctx.find_object(Factory).cross = True


def _use_target_cuda(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_object(Factory).target_cuda = value.expanduser().absolute()


cross_option = click.option(
    "--cross", is_flag=True, expose_value=False, callback=_use_cross, envvar="WHEELFACTORY_CROSS",
    help="Build a release meant for another machine (platform = 'linux_aarch64' on an x86_64 host) for that "
         "machine: steps whose recipe can cross-compile run this host's nvcc with the target's GNU cross "
         "compiler and CUDA libraries; the plan shows each step's mode (native, cross, emulated).")
target_cuda_option = click.option(
    "--target-cuda", type=click.Path(path_type=Path), default=None, expose_value=False, callback=_use_target_cuda,
    envvar="WHEELFACTORY_TARGET_CUDA", metavar="DIR",
    help="With --cross: the target's CUDA libraries (DIR/lib64 or DIR/lib, e.g. a cross toolkit's "
         "targets/sbsa-linux) instead of the release's CUDA wheels for the target machine.")


def _verify_cached(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # On the Factory, as --system-cuda: the executor it makes hashes every cached wheel in full.
    if value:
        ctx.find_object(Factory).verify = True


verify_option = click.option(
    "--verify", is_flag=True, expose_value=False, callback=_verify_cached,
    help="Hash every cached wheel in full before trusting it (default: size and mtime as published, a full "
         "hash when they differ); a wheel that changed is moved to attic/ and built again.")


def plan_inputs(command):
    """The options every planning command takes: release, targets, --env, --source-dir, --adopt."""
    for decorate in reversed((release_option, targets_argument, env_option, secret_env_option, source_dir_option,
                              adopt_option, system_cuda_option, cross_option, target_cuda_option)):
        command = decorate(command)
    return command


def _checked_cache_dir(path: Path) -> Path:
    """--cache-dir as the Factory keeps it (absolute), refused when it names a file: every command
    keeps logs or sources there. Checked wherever the option was typed, before or after the command."""
    cache = path.expanduser()
    if cache.exists() and not cache.is_dir():
        raise InputError(f"--cache-dir {cache} is a file, not a directory; pass a directory")
    return cache.absolute()


@click.group(cls=GlobalOptionsGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="wheelfactory")
@click.option("--wheelhouse", type=click.Path(path_type=Path), default=Path("wheelhouse"), show_default=True,
              envvar="WHEELFACTORY_WHEELHOUSE", help="The wheelhouse directory (wheels, simple/, manifest).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("~/.cache/wheelfactory"),
              show_default=True, envvar="WHEELFACTORY_CACHE_DIR",
              help="Sources, build requirements, work trees and logs.")
@click.option("--recipes-dir", type=click.Path(path_type=Path), default=None, envvar="WHEELFACTORY_RECIPES_DIR",
              help="Your own recipe modules, releases/ and data/, added on top of the shipped ones; a recipe, "
                   "release or data file with a shipped name replaces the shipped one.")
@click.option("--index-url", default="https://pypi.org/simple", show_default=True, envvar="WHEELFACTORY_INDEX_URL",
              help="Package index for sdists, build requirements and PyPI pins.")
@click.option("--allow-insecure-index", is_flag=True, envvar="WHEELFACTORY_ALLOW_INSECURE_INDEX",
              help="Accept a plain http:// --index-url (anyone on the network path can swap what it serves).")
@click.pass_context
def cli(ctx: click.Context, wheelhouse: Path, cache_dir: Path, recipes_dir: Path | None, index_url: str,
        allow_insecure_index: bool) -> None:
    """Build the DGX Spark inference stack into wheels built against each other, and assemble
    thin runtime images from them.

    The options below are also accepted after the command (`wheelfactory plan --cache-dir DIR`)."""
    # the flag counts after the command's name as well (see globalopts.py)
    allowed = allow_insecure_index or ALLOW_INSECURE_INDEX in ctx.meta.get(AFTER_COMMAND, ())
    ctx.meta[ALLOW_INSECURE_INDEX] = allowed
    index_url = check_url(index_url, allowed, "--index-url", "pass --allow-insecure-index", INDEX_SCHEMES)
    for option, path in (("--wheelhouse", wheelhouse), ("--cache-dir", cache_dir), ("--recipes-dir", recipes_dir)):
        if path is not None:
            check_path_length(path.expanduser(), option)
    shipped = default_recipes_dir()
    ctx.obj = Factory(recipes_dir.expanduser().absolute() if recipes_dir else shipped,
                      wheelhouse.expanduser().absolute(), _checked_cache_dir(cache_dir), index_url=index_url,
                      shipped_recipes_dir=shipped)


@cli.command("list")
@click.option("--options", "show_options", is_flag=True,
              help="Also show each recipe's options (what a release may set under options = { ... }).")
@click.pass_obj
def list_cmd(factory: Factory, show_options: bool) -> None:
    """Show recipes, releases and what the wheelhouse holds."""
    click.echo("recipes:")
    loaded_recipes = list(factory.recipes.items())
    rows = [(name, ", ".join(lr.recipe.outputs), ", ".join(lr.recipe.depends_on)) for name, lr in loaded_recipes]
    lines = table(("component", "wheels", "after"), rows)
    click.echo(f"  {lines[0]}")
    for line, (_name, loaded) in zip(lines[1:], loaded_recipes, strict=True):
        r = loaded.recipe
        click.echo(f"  {line}")
        for o in r.options if show_options else ():
            default = str(o.default).lower() if o.type is bool else repr(o.default)
            click.echo(f"      options.{o.name} ({o.type.__name__}, default {default}): {o.help}")
    click.echo("releases:")
    for name in list_releases(factory.recipes_dirs):
        click.echo(f"  {name}")
    from ..pipeline.cachestore import fmt_bytes

    manifest = factory.wheelhouse.manifest()
    ours = {f: e for f, e in manifest.items() if e.get("component")}
    deps = {f: e for f, e in manifest.items() if not e.get("component")}
    click.echo(f"wheelhouse {factory.wheelhouse.root}: {len(ours)} factory wheel(s) "
               f"({fmt_bytes(sum(e['size'] for e in ours.values()))}), {len(deps)} dependency wheel(s) from the index "
               f"({fmt_bytes(sum(e['size'] for e in deps.values()))})")
    if ours:
        rows = [(e["component"], e["version"], e.get("origin", "?"), fmt_bytes(e["size"]), f)
                for f, e in sorted(ours.items(), key=lambda fe: (fe[1]["component"], fe[0]))]
        for line in table(("component", "version", "origin", "size", "file"), rows, right=(3,)):
            click.echo(f"  {line}")
    if deps:
        click.echo("dependency wheels (locks' runtime closure, downloaded by `lock`):")
        rows = [(e.get("dist") or f.split("-")[0], e["version"], fmt_bytes(e["size"]), f)
                for f, e in sorted(deps.items())]
        for line in table(("name", "version", "size", "file"), rows, right=(2,)):
            click.echo(f"  {line}")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """A header line and one line per row, each column as wide as its widest value (the last one
    left ragged), columns in `right` aligned right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [str(v).rjust(w) if i in right else str(v).ljust(w)
                 for i, (v, w) in enumerate(zip(row, widths, strict=True))]
        return ("  ".join(cells[:-1] + [str(row[-1])])).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _print_plan(plan: Plan) -> None:
    t = plan.target
    cuda = "toolkit from wheels" if is_wheel_label(t.toolkit) else f"system nvcc: {t.toolkit}"
    click.echo(f"release {plan.release.name}: python {t.python}, CUDA {t.cuda} ({cuda}), "
               f"arch {';'.join(t.cuda_arch_list)}, platform {t.platform}")
    if not is_wheel_label(t.toolkit) and (warning := mismatch_warning(t.cuda, t.toolkit)):
        click.echo(f"  {warning}")
    if t.platform != plan.release.target.platform:
        click.echo(f"  note: the release is meant for {plan.release.target.platform}; wheels built here are "
                   f"{t.platform} (--cross builds them for {plan.release.target.platform})")
    host = plan.build_host
    if host is not None and host.cross and host.machine != t.machine:
        click.echo(f"  cross build on {host.machine} for {t.machine}: target CUDA libraries {host.cross_cuda}; "
                   "mode per step: native, cross (this host's nvcc, the target's compilers and libraries) or "
                   "emulated (runs target code: not in this process)")
    rows = [(f"{i}.", s.action, s.mode or "-", s.component, s.version, s.key[:12],
             f"adopt {s.adopt}" if s.adopt else (s.source.describe() if s.source else ""))
            for i, s in enumerate(plan.steps, 1)]
    lines = table(("#", "action", "mode", "component", "version", "key", "source"), rows, right=(0,))
    click.echo(lines[0])
    for line, s in zip(lines[1:], plan.steps, strict=True):
        click.echo(line)
        if s.mode == EMULATED:
            click.echo(f"      emulated: {NATIVE_ONLY.get(s.component, 'its recipe does not declare CROSS')}")
        elif s.mode == CROSS and s.build_with:
            click.echo(f"      cross: its build venv also needs the target's {', '.join(s.build_with)} wheels "
                       "(imported by its build): not wired yet, a cross build stops before it")
        for tree, patches in s.patches.items():
            click.echo(f"      patches ({tree}): {', '.join(Path(p.name).name for p in patches)}")
        if s.unchecked_archs and s.action != CACHED:
            click.echo(f"      device code NOT CHECKED for {' '.join(s.unchecked_archs)}: {s.component} {s.version}'s "
                       f"configure was never judged for it, so the build may stop there with the device-code table; "
                       f"find out in minutes, before its dependencies' hours: wheelfactory build --release "
                       f"{plan.release.name} {s.component} --until configure (README, Releases)")
        if s.unresolved:
            # Keyed by name until fetch records the commit or sha256; the key changes then.
            click.echo(f"      unresolved: run fetch (keyed by name until fetch records the commit or sha256 of: "
                       f"{', '.join(s.unresolved)}; the key changes then)")
        for k, v in sorted(s.env.items()):
            click.echo(f"      {k}={v}")
    if plan.pins:
        click.echo("pinned from PyPI: " + ", ".join(f"{n}=={v}" for n, v in sorted(plan.pins.items())))
    if plan.overrides:
        click.echo("overrides (win over what other packages declare; `lock` resolves with them):")
        for name, o in plan.overrides.items():
            click.echo(f"  {name}=={o['version']} ({o['kind']}): {o['reason']}")


def _python_first(plan: Plan, python: str | None) -> None:
    """A missing build interpreter is reported before any remote is asked for a commit or hash, as
    it is before anything is downloaded or built."""
    if any(s.action != CACHED for s in plan.steps):
        find_python(plan.target.python, python)


@cli.command()
@plan_inputs
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (the stable contract).")
@click.pass_obj
def plan(factory: Factory, release: str, targets: tuple[str, ...], env: tuple[str, ...],
         source_dirs: tuple[str, ...], adopt: tuple[str, ...], as_json: bool) -> None:
    """Show what would be built for TARGETS (default: the whole release), in order, and what is cached."""
    p = factory.plan(factory.release(release), targets, env, source_dirs, adopt)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=2))
    else:
        _print_plan(p)


@cli.command()
@plan_inputs
@click.option("--python", help="Interpreter for build venvs (default: python<release version> on PATH).")
@click.option("--verbose", "-v", is_flag=True, help="Echo build output as well as logging it.")
@click.option("--accept-moved-tags", is_flag=True,
              help="Accept a tag that now names another commit (or an sdist the index now serves with another "
                   "sha256) than when it was recorded; builds from it get new keys.")
@click.pass_obj
def fetch(factory: Factory, release: str, targets: tuple[str, ...], env: tuple[str, ...],
          source_dirs: tuple[str, ...], adopt: tuple[str, ...], python: str | None, verbose: bool,
          accept_moved_tags: bool) -> None:
    """Resolve every git ref to a commit and every sdist to its sha256 (recorded in the cache; a moved
    tag is an error), and download every source and build requirement, so that `build --offline`
    needs no network."""
    from ..host.doctor import FAIL, Probe, check_remotes

    rel = factory.release(release)
    p = factory.plan(rel, targets, env, source_dirs, adopt)
    _python_first(p, python)
    # One line for no network, before any remote is asked (not a git error per source).
    if (net := check_remotes([s for s in p.steps if s.source or s.extra_sources], factory.index_url,
                             Probe())).level == FAIL:
        raise InputError(f"fetch: {net.message}")
    if factory.resolve_sources(p, _echo, refresh=True, accept_moved=accept_moved_tags):
        p = factory.plan(rel, targets, env, source_dirs, adopt)  # keyed by the commits and hashes just recorded
    factory.executor(p, _echo, python=python, verbose=verbose).fetch()
    _echo("fetched everything the plan needs")


def _finite_wait(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    # FloatRange(min=0) lets nan (every comparison false: a wait without end) and inf through.
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds; give a finite number >= 0")
    return value


@cli.command()
@plan_inputs
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, envvar="WHEELFACTORY_JOBS",
              help="Parallel compile jobs (default: CPUs, capped by free memory / the recipe's memory per job).")
@click.option("--offline", is_flag=True, envvar="WHEELFACTORY_OFFLINE",
              help="Use only the cache: no downloads (run `fetch` first).")
@click.option("--keep-work", is_flag=True, help="Keep each step's work tree after a successful build.")
@verify_option
@click.option("--until", type=click.Choice(PHASES[:-1]), default=None,
              help="Stop the TARGETS' steps after this phase (dependencies are built in full): keep the work "
                   "tree, publish nothing. `--until configure` prints the device code the build would compile.")
@click.option("--python", help="Interpreter for build venvs (default: python<release version> on PATH).")
@click.option("--verbose", "-v", is_flag=True, help="Echo build output as well as logging it.")
@click.option("--quiet", "-q", is_flag=True,
              help="Print only warnings, errors and the final summary: no status line, no step lines.")
@click.option("--rebuild", "rebuild", multiple=True, metavar="COMPONENT",
              help="Build COMPONENT again even if cached (repeatable); its old wheels go to attic/.")
@click.option("--force", is_flag=True, help="Build every step of the plan again even if cached.")
@click.option("--no-host-check", is_flag=True, help="Skip the host checks that run first (see `wheelfactory doctor`).")
@click.option("--fresh", is_flag=True,
              help="Start every step over: never resume a work tree a failed or stopped run left.")
@click.option("--wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS", callback=_finite_wait,
              help="Give up (exit 3) when the wheelhouse lock is still held by another process after SECONDS "
                   "(default: wait as long as it takes, saying who holds it once a minute). Builds run outside "
                   "the lock; only publishing waits.")
@click.option("--pip", "use_pip", is_flag=True,
              help="Fill build venvs with pip instead of uv (slower; the same files).")
@click.option("--no-configure-check", is_flag=True,
              help="Do not configure a vLLM whose device code was never checked for the release's arch before "
                   "building its dependencies (the check adopts them from the index, in a wheelhouse of its own).")
@click.pass_obj
def build(factory: Factory, release: str, targets: tuple[str, ...], env: tuple[str, ...],
          source_dirs: tuple[str, ...], adopt: tuple[str, ...], jobs: int | None, offline: bool, keep_work: bool,
          until: str | None, python: str | None, verbose: bool, quiet: bool, rebuild: tuple[str, ...],
          force: bool, no_host_check: bool, fresh: bool, wait: float | None, use_pip: bool,
          no_configure_check: bool) -> None:
    """Build TARGETS (default: the whole release) and their dependencies into the wheelhouse."""
    if quiet and verbose:
        raise InputError("--quiet and --verbose contradict each other; pass one of them")
    echo = _quiet_echo if quiet else _echo
    started = time.monotonic()
    check_jobs(jobs)
    if until and not targets:
        raise InputError(f"--until {until} needs the components to stop, e.g. `wheelfactory build vllm --until "
                         f"{until}` (their dependencies are built in full first)")
    rel = factory.release(release)
    p = factory.plan(rel, targets, env, source_dirs, adopt)
    if blockers := cross_blockers(p.steps, p.target.platform):  # before any remote is asked anything
        raise InputError("\n".join(blockers))
    with output_mode_set(QUIET if quiet else None):  # every runner's status line: none with --quiet
        forced = components_to_rebuild(p, rebuild, force, factory.recipes)
        # The host check comes before any remote is asked: an unreachable network or a missing
        # interpreter is one line of its summary (exit 2), not one git error per source.
        if not no_host_check:
            _host_check(factory, p, python, forced, echo, offline=offline)
        if not offline and any(s.unresolved for s in p.steps):
            # A source never fetched is resolved first, so that the wheels are keyed by its content.
            if no_host_check:
                _python_first(p, python)
            if factory.resolve_sources(p, echo):
                p = factory.plan(rel, targets, env, source_dirs, adopt)
                forced = components_to_rebuild(p, rebuild, force, factory.recipes)
        if not until and not no_configure_check and (first := configure_first(p, factory.recipes)):
            _configure_first(factory, rel, first, env, source_dirs, adopt, echo, jobs=jobs, offline=offline,
                             python=python, verbose=verbose, fresh=fresh, use_pip=use_pip)
        results = factory.executor(p, echo, jobs=jobs, offline=offline, keep_work=keep_work, python=python,
                                   verbose=verbose, until=until, until_steps=tuple(targets), rebuild=forced,
                                   fresh=fresh, wait=wait, use_pip=use_pip).build()
    stopped = [r for r in results if r.action.startswith("until-")]
    if stopped:
        _echo(f"stopped {', '.join(r.component for r in stopped)} after {until}; nothing of them was published")
        return
    built = sum(1 for r in results if r.action != "cached")
    _echo(f"{built} built, {len(results) - built} cached, in {time.monotonic() - started:.1f}s; "
          f"wheelhouse: {factory.wheelhouse.root}")


def _configure_first(factory: Factory, rel: Release, first: ConfigureFirst, env: tuple[str, ...],
                     source_dirs: tuple[str, ...], adopt: tuple[str, ...], echo: Callable[[str], None],
                     **options: object) -> None:
    """Configure an unchecked step against its dependencies adopted from the index, in a wheelhouse of its
    own, before the release's own builds: a device-code failure stops the build here (exit 1), with the table."""
    s = first.step
    echo(f"{s.component} {s.version}'s device code was never checked for {' '.join(s.unchecked_archs)}: configuring "
         f"it first, against {', '.join(first.adopt.values())} from the index, before the builds of "
         f"{', '.join(first.adopt)} (--no-configure-check skips this)")
    where = check_dir(factory.cache_dir, rel.name)
    checker = dataclasses.replace(factory, wheelhouse_dir=where / "wheelhouse")
    # the user's --adopt after ours: a wheel given by hand wins
    cp = checker.plan(rel, [s.component], env, source_dirs, (*first.adopt_options(), *adopt))
    checker.executor(cp, echo, until="configure", until_steps=(s.component,), **options).build()
    echo(f"{s.component} {s.version}: its configure's device code fits {' '.join(s.unchecked_archs)}; "
         "building the release")


def _say_lock_holder(holder: str) -> None:
    _echo(f"waiting for the wheelhouse lock, held by {holder} ...")


def _quiet_echo(msg: str) -> None:
    """`build --quiet`'s echo: warnings only (errors are raised, and main prints them)."""
    if msg.lstrip().lower().startswith(("warning", "error")):
        _echo(msg)


# More compile jobs than this many per CPU only thrash (and each needs GBs of memory): a typo such
# as --jobs 1000000 is refused up front instead of forking until the machine stops answering.
JOBS_PER_CPU = 4


def check_jobs(jobs: int | None, cpus: int | None = None) -> None:
    """InputError (exit 2) for a --jobs above JOBS_PER_CPU x the CPU count."""
    cpus = cpus or os.cpu_count() or 1
    if jobs is not None and jobs > JOBS_PER_CPU * cpus:
        raise InputError(f"--jobs {jobs}: more than {JOBS_PER_CPU} x the {cpus} CPUs of this machine; "
                         f"use at most --jobs {JOBS_PER_CPU * cpus} (or leave it out for a memory-aware default)")


def _host_check(factory: Factory, p: Plan, python: str | None, forced: frozenset[str],
                echo: Callable[[str], None] = _echo, offline: bool = False) -> None:
    """`doctor`'s checks before a build: problems and the ccache line shown, a failure stops it (exit 2)."""
    from ..host.doctor import FAIL, OK, failures, host_checks

    checks = host_checks(p, factory.host, factory.cache_dir, python, rebuild=forced, nvcc=factory.build_nvcc(p.release),
                         sources=factory.sources, index_url=factory.index_url, offline=offline)
    for c in checks:
        if c.level != OK or c.name == "ccache":
            echo(f"host: {c.line()}")
    if bad := failures(checks):
        raise InputError(f"the host check found {len(bad)} problem(s) that would fail the build ({FAIL} above); "
                         "nothing was built. `wheelfactory doctor` shows every check; --no-host-check skips them")


@cli.command()
@release_option
@targets_argument
@system_cuda_option
@cross_option
@target_cuda_option
@click.option("--python", help="Interpreter for build venvs (default: python<release version> on PATH).")
@click.pass_obj
def doctor(factory: Factory, release: str, targets: tuple[str, ...], python: str | None) -> None:
    """Check this host against building TARGETS (default: the whole release) before anything starts:
    the interpreter, disk, memory, ccache, CUDA and its arch support, the network or a complete
    source cache, Docker. Exit 2 if a build would fail."""
    from ..host.doctor import failures, host_checks

    p = factory.plan(factory.release(release), targets)
    checks = host_checks(p, factory.host, factory.cache_dir, python, images=True, nvcc=factory.build_nvcc(p.release),
                         sources=factory.sources, index_url=factory.index_url)
    for c in checks:
        click.echo(c.line())
    if bad := failures(checks):
        raise InputError(f"{len(bad)} check(s) would fail a build of {p.release.name}: "
                         + ", ".join(c.name for c in bad))
    _echo(f"the host can build {p.release.name}")


@cli.command()
@click.argument("component")
@click.argument("wheel_or_requirement", required=False)
@release_option
@system_cuda_option  # the adopted step's key, as the builds against it will compute it
@click.option("--python", help="Interpreter of the target Python version (default: python<release version>).")
@click.option("--from-python", "from_python", metavar="PYTHON",
              help="Adopt the distribution installed in this interpreter, repacked into a wheel (its files "
                   "from RECORD, hashes checked), e.g. the GB10 PyTorch of an NGC container.")
@click.option("--with-requires", is_flag=True,
              help="With --from-python: also repack the installed distributions it requires, into the build "
                   "cache, so builds against it need no index.")
@click.pass_obj
def adopt(factory: Factory, component: str, wheel_or_requirement: str | None, release: str, python: str | None,
          from_python: str | None, with_requires: bool) -> None:
    """Put an existing wheel (a path, URL or requirement such as torch==2.10.0) into the wheelhouse as
    COMPONENT, so everything downstream builds against it instead of a source build."""
    rel = factory.release(release)
    if bool(from_python) == bool(wheel_or_requirement):
        raise InputError("adopt takes either WHEEL_OR_REQUIREMENT or --from-python PYTHON (one of them)")
    if from_python:
        wheel_or_requirement = str(_repack_from_python(factory, component, from_python, with_requires))
    spec = f"{component}={wheel_or_requirement}"
    p = factory.plan(rel, [component], adopt=[spec])
    p = dataclasses.replace(p, steps=tuple(s for s in p.steps if s.component == component))
    factory.executor(p, _echo, python=python).build()
    _echo(f"adopted {component}; build against it with --adopt '{spec}', or add to the release:\n"
          f"  [components.{component}]\n  adopt = \"{p.steps[0].adopt}\"")


def _repack_from_python(factory: Factory, component: str, python: str, with_requires: bool) -> Path:
    """Repack COMPONENT's outputs as installed in PYTHON; requirements go to the build cache's pydeps/."""
    if shutil.which(python) is None and not Path(python).is_file():
        raise InputError(f"--from-python {python!r}: no such interpreter")
    outputs = factory.recipes[component].recipe.outputs if component in factory.recipes else ()
    if not outputs:
        raise InputError(f"unknown component {component!r}; known: {', '.join(sorted(factory.recipes))}")
    cache = factory.cache_dir.expanduser()
    runner = Runner(component, cache / "logs" / f"adopt-{component}.log")
    out = cache / "adopt" / "installed" / component
    wheels = repack_installed(python, outputs[0], out, runner, with_requires=with_requires)
    main_wheel, requires = wheels[0], wheels[1:]
    pydeps = pydeps_dir(cache, factory.index_url)  # offered to builds against this index only
    pydeps.mkdir(parents=True, exist_ok=True)
    for wheel in requires:
        shutil.move(str(wheel), pydeps / wheel.name)
    _echo(f"repacked {main_wheel.name} from {python}" + (f" and {len(requires)} installed requirement(s) into "
                                                        f"{pydeps}" if requires else ""))
    return main_wheel


@cli.command()
@release_option
@system_cuda_option
@click.option("--offline", is_flag=True, envvar="WHEELFACTORY_OFFLINE",
              help="Resolve from the wheelhouse alone; download nothing.")
@click.option("--python", help="Interpreter of the target Python version (default: python<release version>).")
@click.option("--verbose", "-v", is_flag=True, help="Echo pip's output as well as logging it.")
@click.option("--refresh", is_flag=True, help="Resolve again although nothing the lock was made from changed "
                                               "(newer versions of dependencies on the index).")
@click.pass_obj
def lock(factory: Factory, release: str, offline: bool, python: str | None, verbose: bool, refresh: bool) -> None:
    """Resolve the release's complete runtime closure into the wheelhouse and write its lock file."""
    rel = factory.release(release)
    p = factory.plan(rel)
    runner = Runner("lock", factory.cache_dir / "logs" / f"lock-{rel.name}.log", verbose=verbose)
    with factory.wheelhouse.lock(on_wait=_say_lock_holder):
        locked = lock_release(p, factory.wheelhouse, runner, find_python(rel.target.python, python),
                              factory.index_url, offline=offline, refresh=refresh,
                              cuda_wheels=load_cuda_wheels(factory.data_root("cuda_wheels.toml") / "data" /
                                                           "cuda_wheels.toml"))
    json_path, txt_path = lock_paths(factory.wheelhouse, rel.name)
    if locked.up_to_date:
        _echo(f"lock of {rel.name} up to date ({len(locked.packages)} packages; nothing it was made from changed): "
              f"{txt_path}; --refresh resolves again")
        return
    ours = sum(1 for pkg in locked.packages if pkg.component)
    _echo(f"locked {len(locked.packages)} packages ({ours} from the factory, {len(locked.packages) - ours} from "
          f"PyPI) -> {txt_path}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@release_option
@click.option("--python", help="Interpreter of the target Python version (default: python<release version>).")
@click.option("--verbose", "-v", is_flag=True, help="Echo pip's output as well as logging it.")
@click.option("--pip", "use_pip", is_flag=True, help="Install with pip instead of uv (the default; pip when no "
                                                      "uv is found).")
@click.option("--clear", is_flag=True, help="Replace a virtual environment already at PATH (as `python -m venv "
                                            "--clear`; a directory that is not a venv is left alone).")
@click.pass_obj
def venv(factory: Factory, path: Path, release: str, python: str | None, verbose: bool, use_pip: bool,
         clear: bool) -> None:
    """Create a virtual environment at PATH from the release's lock, offline, and smoke-test it."""
    rel = factory.release(release)
    runner = Runner("venv", factory.cache_dir / "logs" / f"venv-{rel.name}.log", verbose=verbose)
    ran = create_venv(path.expanduser().absolute(), rel.name, factory.wheelhouse, factory.recipes,
                      find_python(rel.target.python, python), runner, use_uv=not use_pip,
                      uv_cache=uv_cache_dir(factory.cache_dir), clear=clear)
    _echo(f"venv ready at {path} ({len(ran)} smoke check(s) and pip check passed); "
          f"activate with: source {path}/bin/activate")


@cli.command()
@click.argument("wheels", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--arch", "archs", multiple=True, metavar="ARCH",
              help="Judge against this target arch list, e.g. --arch 12.1a or --arch '9.0a;12.1a' (repeatable): "
                   "exit 1 if a shared object has no native code for a target or arch-specific code for another GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the audit (and verdict) as JSON.")
def inspect(wheels: tuple[Path, ...], archs: tuple[str, ...], as_json: bool) -> None:
    """Show the CUDA device code of every shared object in WHEELS (bytes per arch) and, with --arch,
    whether each loads natively on the target GPUs. Several wheels are shown side by side."""
    # Imported here: only this command reads fatbins, and the other commands start faster without.
    from ..cuda import audit as wheel_audit

    if archs:
        wheel_audit.target_devices(archs)  # a bad --arch is reported before any wheel is read
    audits = [wheel_audit.audit_wheel(w) for w in wheels]
    verdicts = [wheel_audit.judge(a, archs) if archs else None for a in audits]
    if as_json:
        click.echo(json.dumps({"wheels": [
            {"wheel": a.wheel, "provenance": a.provenance, "device_code": a.to_json(),
             "verdict": v.to_json() if v else None} for a, v in zip(audits, verdicts, strict=True)]}, indent=2))
    else:
        click.echo("\n\n".join(wheel_audit.render(a, v) for a, v in zip(audits, verdicts, strict=True)))
        if len(audits) > 1:
            click.echo("\n" + wheel_audit.render_comparison(audits))
    bad = [(a, v) for a, v in zip(audits, verdicts, strict=True) if v is not None and not v.ok]
    if bad:
        raise wheel_audit.PolicyError("; ".join(f"{a.wheel} contradicts --arch {';'.join(v.targets)} "
                                                f"({len(v.failures)} shared object(s))" for a, v in bad))


@cli.command()
@click.pass_obj
def verify(factory: Factory) -> None:
    """Check the whole wheelhouse: every manifest file present with its sha256 (hashed in full), no
    wheel missing from the manifest, simple/ linking exactly the manifest's wheels, and every lock's
    hashes those of wheels it holds. Exit 1 listing each problem, 0 when clean."""
    from ..store.verify import verify_wheelhouse

    if not factory.wheelhouse.root.is_dir():
        raise InputError(f"no wheelhouse at {factory.wheelhouse.root} (set --wheelhouse)")
    # Under the write lock: a publish in progress would otherwise look like a mismatch.
    with factory.wheelhouse.lock(on_wait=_say_lock_holder):
        problems = verify_wheelhouse(factory.wheelhouse)
    if problems:
        raise BuildError(f"{factory.wheelhouse.root}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    _echo(f"{factory.wheelhouse.root}: {len(factory.wheelhouse.manifest())} wheel(s), manifest, index and locks "
          "consistent")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, for the other machines of a cluster).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Do not log each request.")
@click.pass_obj
def serve(factory: Factory, host: str, port: int, quiet: bool) -> None:
    """Serve the wheelhouse read-only over HTTP: the PEP 503 index with PEP 658 metadata, the wheels
    and the locks, until interrupted."""
    from ..store.serve import make_server

    server = make_server(factory.wheelhouse.root, host, port, quiet)
    url = f"http://{host}:{server.server_address[1]}"
    _echo(f"serving {factory.wheelhouse.root} at {url}/simple/ (read-only; Ctrl-C stops)\n"
          f"  the locked set: pip install --no-deps --require-hashes --index-url {url}/simple/ "
          f"-r {url}/locks/<release>.txt")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _echo("stopped serving")
    finally:
        server.server_close()


@cli.group("release")
def release_group() -> None:
    """Derive releases from upstream, check shipped ones against it, print the release file schema."""


def _check_upstream_gits(vllm_git: str, triton_git: str) -> None:
    """--vllm-git and --triton-git of `release derive` and `release check`, checked as a release
    file's git source is (exit 2 before anything is fetched). They have no allow_insecure, so a
    plain http:// or git:// repository is refused, as fetching it would be later."""
    for option, url in (("--vllm-git", vllm_git), ("--triton-git", triton_git)):
        check_git_transport(check_git_url(url, option), False, option, "clone it yourself and pass its path")


def _upstream(factory: Factory, vllm_git: str, triton_git: str):
    from ..derive.upstream import LiveUpstream  # imported here: only these commands read upstream

    return LiveUpstream(factory.cache_dir, factory.index_url, vllm_git, triton_git)


@release_group.command("derive")
@click.option("--vllm", "vllm_version", required=True, metavar="VERSION", help="vLLM version, e.g. 0.33.0.")
@click.option("--transformers", "transformers_major", type=click.IntRange(4, 5), default=5, show_default=True,
              help="Transformers major of the release (-t4 or -t5); refused if vLLM's range excludes it.")
@click.option("--ref", help="Read vLLM at this git tag or commit instead of the version's sdist (needs the git "
                            "repository to be reachable).")
@click.option("--cuda", help="The release's CUDA, e.g. 13.1.0 (default: the --extends release's, else the CUDA of "
                             "torch's own build).")
@click.option("--nccl", help="NCCL version in its tag form, e.g. 2.30.7-1 (default: torch's nvidia-nccl-cu13 pin).")
@click.option("--extends", "extends", help="Write the release as a child of this one (only what differs).")
@click.option("--name", help="Release name (default: <vllm>-t<transformers major>).")
@click.option("--vllm-git", default="https://github.com/vllm-project/vllm.git", show_default=True)
@click.option("--triton-git", default="https://github.com/triton-lang/triton.git", show_default=True)
@click.option("--force", is_flag=True, help="Replace existing data entries and release files that differ.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--data-only", is_flag=True, help="Write the recipe data entries only, no release file.")
@click.pass_obj
def release_derive(factory: Factory, vllm_version: str, transformers_major: int, ref: str | None, cuda: str | None,
                   nccl: str | None, extends: str | None, name: str | None, vllm_git: str, triton_git: str,
                   force: bool, dry_run: bool, data_only: bool) -> None:
    """Derive a release of vLLM VERSION and its recipe data from upstream, printing every value with
    its source; writes recipes/releases/<name>.toml and appends to recipes/data/*.toml."""
    # Each value becomes a file name, TOML text or a git argument: checked like a release's own.
    for option, version in (("--vllm", vllm_version), ("--cuda", cuda), ("--nccl", nccl)):
        if version is not None:
            check_version_text(version, option)
    if name:
        check_release_name(name, "--name")
    if ref:
        check_git_ref(ref, "--ref")
    _check_upstream_gits(vllm_git, triton_git)
    from ..derive.derivation import Request, derive, plan_writes
    from ..planning.release import releases_dir

    parent = factory.release(extends) if extends else None
    # The data goes where the recipes that read it live (the shipped data/ unless --recipes-dir has
    # its own); the release file goes into the top recipes directory (--recipes-dir when given).
    d = derive(_upstream(factory, vllm_git, triton_git), factory.data_root("vllm.toml"),
               Request(vllm_version, transformers_major, ref, cuda, nccl, parent, name))
    click.echo(d.report())
    if data_only:
        d.releases.clear()
    writes = plan_writes(d, factory.data_root("vllm.toml"), releases_dir(factory.recipes_dir), force)
    blocked = []
    for w in writes:
        if w.status == "same":
            click.echo(f"unchanged: {w.path}")
            continue
        click.echo(w.diff(), nl=False)
        if w.status == "differs":
            blocked.append(w.path)
        elif not dry_run:
            w.path.parent.mkdir(parents=True, exist_ok=True)
            w.path.write_text(w.new)
            click.echo(f"wrote {w.path}")
    if dry_run:
        _echo("--dry-run: nothing written")
    if blocked:
        raise FactoryError(f"not written, they differ from what was derived (diff above): "
                           f"{', '.join(map(str, blocked))}; pass --force to replace them")
    if d.missing:
        _echo(f"{len(d.missing)} value(s) NOT DERIVED (listed above, with why)")


@release_group.command("check")
@click.argument("releases", nargs=-1)
@click.option("--vllm-git", default="https://github.com/vllm-project/vllm.git", show_default=True)
@click.option("--triton-git", default="https://github.com/triton-lang/triton.git", show_default=True)
@click.pass_obj
def release_check(factory: Factory, releases: tuple[str, ...], vllm_git: str, triton_git: str) -> None:
    """Re-derive the upstream data of RELEASES (default: every shipped release) and report drift:
    exit 1 on drift, 0 when everything that could be read matches."""
    _check_upstream_gits(vllm_git, triton_git)
    from ..derive.derivation import check_release

    up = _upstream(factory, vllm_git, triton_git)
    drift = unverified = 0
    for name in releases or list_releases(factory.recipes_dirs):
        result = check_release(up, factory.data_root("vllm.toml"), factory.release(name))
        for line in result.checked:
            click.echo(f"{name}: ok      {line}")
        for line in result.drift:
            click.echo(f"{name}: DRIFT   {line}")
        for line in result.unverified:
            click.echo(f"{name}: UNREAD  {line}")
        drift += len(result.drift)
        unverified += len(result.unverified)
    summary = f"{drift} drift, {unverified} not readable here"
    if drift:
        raise FactoryError(f"release check: {summary}")
    _echo(f"release check: clean ({summary})")


@cli.group("cache")
def cache_group() -> None:
    """What the build cache holds, and removing what no build needs (gc)."""


@cache_group.command("list")
@click.pass_obj
def cache_list(factory: Factory) -> None:
    """Show each area of the cache with its size, the work trees and staged copies (in use or not),
    and the wheelhouse's attic."""
    from ..pipeline.cachestore import CacheStore, busy, fmt_bytes, tree_size

    factory.wheelhouse.check_root()  # a --wheelhouse that is a file: bad input, before anything is listed
    store = CacheStore(factory.cache_dir, factory.wheelhouse)
    rows = store.usage()
    click.echo(f"cache {factory.cache_dir}: {fmt_bytes(sum(r[3] for r in rows))}")
    for label, _path, count, size in rows:
        click.echo(f"  {label:<28} {count:>5}  {fmt_bytes(size):>10}")
    for tree, lock in store.work_trees():
        click.echo(f"  work    {fmt_bytes(tree_size(tree)):>10}  {tree.name}{'  (in use)' if busy(lock) else ''}")
    for staged in sorted(store.staged.iterdir()) if store.staged.is_dir() else ():
        click.echo(f"  staged  {fmt_bytes(tree_size(staged)):>10}  {staged.name}")
    attic = store.attic_entries()
    if attic:
        gone = [p for p, superseded in attic if superseded]
        click.echo(f"wheelhouse attic {factory.wheelhouse.root / 'attic'}: {len(attic)} wheel(s), "
                   f"{fmt_bytes(sum(p.stat().st_size for p, _ in attic))}; {len(gone)} superseded "
                   f"({fmt_bytes(sum(p.stat().st_size for p in gone))})")


@cache_group.command("gc")
@click.option("--dry-run", is_flag=True, help="Show what would be removed and the bytes freed; remove nothing.")
@click.option("--release", "-r", "releases", multiple=True, metavar="NAME|PATH",
              help="A release whose sources to keep besides the shipped and --recipes-dir ones (repeatable; "
                   "a release file kept elsewhere must be named here, or its sources are removed).")
@click.option("--keep-sources", is_flag=True, help="Leave the source trees and archives alone.")
@click.option("--keep-built-from", "built", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Also keep the sources the wheels of this wheelhouse (a directory or its manifest.json) or lock "
                   "(locks/<release>.json) were built from (repeatable; the --wheelhouse in use always counts).")
@click.pass_obj
def cache_gc(factory: Factory, dry_run: bool, releases: tuple[str, ...], keep_sources: bool,
             built: tuple[Path, ...]) -> None:
    """Remove work trees, staged copies, superseded attic entries and the sources that neither a known
    release nor a wheel of the wheelhouse uses. What a running build holds is skipped with a message;
    published wheels are never touched."""
    from ..pipeline.cachestore import CacheStore, built_from, fmt_bytes, kept_by, sources_in_use

    factory.wheelhouse.check_root()  # a --wheelhouse that is a file: bad input, before anything goes
    for name in releases:
        factory.release(name)  # a --release that does not exist is bad input (exit 2), before anything goes
    from_wheels = set().union(*(kept_by(p) for p in built))  # a bad PATH is bad input, before anything goes
    keep, note = None, "--keep-sources"
    if not keep_sources:
        names = list(dict.fromkeys([*list_releases(factory.recipes_dirs), *releases]))
        try:
            keep, planned = sources_in_use(factory, names)
            from_wheels |= built_from(factory.wheelhouse.manifest())
            keep |= from_wheels
            _echo(f"sources kept: those of {len(planned)} release(s) ({', '.join(planned)}) and the "
                  f"{len(from_wheels)} the wheels of {factory.wheelhouse.root}"
                  f"{' and --keep-built-from' if built else ''} were built from")
        except FactoryError as e:  # a release that cannot be planned here: its sources are unknown
            note = f"cannot tell which sources the releases use: {e}"
    store = CacheStore(factory.cache_dir, factory.wheelhouse)
    gc_plan = store.plan_gc(keep, note)
    for line in gc_plan.skipped:
        _echo(line)
    for item in gc_plan.remove:
        click.echo(f"{'would remove' if dry_run else 'remove'} {item.kind:<11} {fmt_bytes(item.size):>10}  "
                   f"{item.path}  ({item.why})")
    if dry_run:
        _echo(f"--dry-run: {len(gc_plan.remove)} item(s), {fmt_bytes(gc_plan.bytes)} would be freed; nothing removed")
        return
    freed = store.run_gc(gc_plan, _echo)
    _echo(f"freed {fmt_bytes(freed)} ({len(gc_plan.remove)} item(s))")


@release_group.command("schema")
@click.pass_obj
def release_schema_cmd(factory: Factory) -> None:
    """Print the JSON Schema of release files for the recipes in use (the shipped ones and
    --recipes-dir): keys, source tables, each component's version form and declared options.
    Editors check a release against it with `#:schema PATH` on its first line (taplo, Even Better TOML)."""
    from ..planning.release_schema import release_schema

    click.echo(json.dumps(release_schema(factory.recipes), indent=2))


# The image assembler lives in its own package; it only reads releases, plans and locks.
cli.add_command(images)


def _late_path(attr: str, option: str, checked: Callable[[Path], Path] = lambda p: p.expanduser().absolute()):
    # `checked` is what the group's own callback does with the value, so both places agree
    def apply(ctx: click.Context, value: Path) -> None:
        check_path_length(value.expanduser(), option)
        setattr(ctx.find_object(Factory), attr, checked(value))
    return apply


def _late_index_url(ctx: click.Context, value: str) -> None:
    ctx.find_object(Factory).index_url = check_url(value, ctx.find_root().meta.get(ALLOW_INSECURE_INDEX, False),
                                                   "--index-url", "pass --allow-insecure-index", INDEX_SCHEMES)


def _late_allow_insecure(ctx: click.Context, value: bool) -> None:
    ctx.find_root().meta[ALLOW_INSECURE_INDEX] = ctx.find_root().meta.get(ALLOW_INSECURE_INDEX) or value


# Last, once every command is declared: the group's options after any subcommand too, and every
# environment variable in --help.
accept_after_subcommand(cli, {"wheelhouse": _late_path("wheelhouse_dir", "--wheelhouse"),
                              "cache_dir": _late_path("cache_dir", "--cache-dir", _checked_cache_dir),
                              "recipes_dir": _late_path("recipes_dir", "--recipes-dir"), "index_url": _late_index_url,
                              "allow_insecure_index": _late_allow_insecure})
show_envvars(cli)


def main() -> None:
    """Entry point: one place turns errors into messages and exit codes."""
    # SIGTERM/SIGHUP (kill PID, a closed terminal) end the factory like Ctrl-C does: an exception,
    # so the running command's process group is killed and locks are released on the way out.
    install_handlers()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort as e:
        _echo("interrupted")
        # click turns KeyboardInterrupt into Abort; 128+signal number, as a shell reports it.
        sys.exit(128 + e.__cause__.signum if isinstance(e.__cause__, Interrupted) else 130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if e.exit_code == 2 else e.exit_code)
    except FactoryError as e:
        _echo(f"error: {e}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _echo("interrupted; nothing partial was published")
        sys.exit(130)
    except OSError as e:  # a full disk or a file in the way, outside any step: a message, not a traceback
        if e.errno == errno.ENOSPC:
            _echo(f"error: no space left on the device{f' writing {e.filename}' if e.filename else ''}; "
                  "free some space and run again")
        else:
            _echo(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}")
        sys.exit(1)
