"""`fetch`, `build`, `doctor` and `adopt`: getting a release's wheels into the wheelhouse."""

from __future__ import annotations

import dataclasses
import time

import click

from ..core.errors import InputError
from ..host.doctor import failures, host_checks
from ..host.facts import check_jobs
from ..pipeline import sequence
from ..pipeline.executor import PHASES
from ..pipeline.factory import Factory
from ..pipeline.installed import repack_for_adoption
from ..run.progress import QUIET, output_mode_set
from .options import (
    cross_option,
    finite_wait,
    plan_inputs,
    release_option,
    say,
    say_warnings,
    system_cuda_option,
    target_cuda_option,
    targets_argument,
    verify_option,
)


@click.command()
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
    sequence.fetch(factory, sequence.BuildRequest(factory.release(release), targets, env, source_dirs, adopt,
                                                  python=python, verbose=verbose, accept_moved=accept_moved_tags), say)
    say("fetched everything the plan needs")


@click.command()
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
@click.option("--wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS", callback=finite_wait,
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
    started = time.monotonic()
    check_jobs(jobs)
    if until and not targets:
        raise InputError(f"--until {until} needs the components to stop, e.g. `wheelfactory build vllm --until "
                         f"{until}` (their dependencies are built in full first)")
    request = sequence.BuildRequest(factory.release(release), tuple(targets), env, source_dirs, adopt, python=python,
                                    verbose=verbose, jobs=jobs, offline=offline, keep_work=keep_work, until=until,
                                    rebuild=rebuild, force=force, host_check=not no_host_check,
                                    configure_check=not no_configure_check, fresh=fresh, wait=wait, use_pip=use_pip)
    with output_mode_set(QUIET if quiet else None):  # every runner's status line: none with --quiet
        results = sequence.build(factory, request, say_warnings if quiet else say).results
    stopped = [r for r in results if r.action.startswith("until-")]
    if stopped:
        say(f"stopped {', '.join(r.component for r in stopped)} after {until}; nothing of them was published")
        return
    built = sum(1 for r in results if r.action != "cached")
    say(f"{built} built, {len(results) - built} cached, in {time.monotonic() - started:.1f}s; "
          f"wheelhouse: {factory.wheelhouse.root}")


@click.command()
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
    p = factory.plan(factory.release(release), targets)
    checks = host_checks(p, factory.host, factory.cache_dir, python, images=True, nvcc=factory.build_nvcc(p.release),
                         sources=factory.sources, index_url=factory.index_url)
    for c in checks:
        click.echo(c.line())
    if bad := failures(checks):
        raise InputError(f"{len(bad)} check(s) would fail a build of {p.release.name}: "
                         + ", ".join(c.name for c in bad))
    say(f"the host can build {p.release.name}")


@click.command()
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
        wheel_or_requirement = str(repack_for_adoption(from_python, component, factory.recipes, factory.cache,
                                                       factory.index_url, with_requires, say))
    spec = f"{component}={wheel_or_requirement}"
    p = factory.plan(rel, [component], adopt=[spec])
    p = dataclasses.replace(p, steps=tuple(s for s in p.steps if s.component == component))
    factory.executor(p, say, python=python).build()
    say(f"adopted {component}; build against it with --adopt '{spec}', or add to the release:\n"
          f"  [components.{component}]\n  adopt = \"{p.steps[0].adopt}\"")
