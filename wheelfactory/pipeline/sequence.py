"""The build sequence, one call for `build` and `fetch`: plan, check the host, resolve the sources
and plan again keyed by their content, decide what is rebuilt, then execute.

The order is the contract: a missing interpreter or an unreachable network is one line (exit 2)
before any remote is asked for a commit or hash; a source never resolved is resolved before
anything is built, so the wheels are keyed by its content, not its name; a vLLM whose device code
was never checked for the release's arch is configured before the hours of its dependencies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import InputError
from ..host import doctor
from ..host.doctor import FAIL, OK, failures
from ..planning.configurefirst import ConfigureFirst, check_dir, configure_first
from ..planning.plan import CACHED, Plan
from ..planning.rebuild import components_to_rebuild
from ..planning.release import Release
from ..toolchain.crossbuild import cross_blockers
from .executor import StepResult, find_python
from .factory import Factory

Echo = Callable[[str], None]


@dataclass(frozen=True)
class BuildRequest:
    """What `build` or `fetch` was asked for: the plan's inputs and how to run it."""
    release: Release
    targets: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    source_dirs: tuple[str, ...] = ()
    adopt: tuple[str, ...] = ()
    python: str | None = None  # the build venvs' interpreter (default: python<release version> on PATH)
    verbose: bool = False
    # build only
    jobs: int | None = None
    offline: bool = False
    keep_work: bool = False
    until: str | None = None
    rebuild: tuple[str, ...] = ()
    force: bool = False
    host_check: bool = True
    configure_check: bool = True
    fresh: bool = False
    wait: float | None = None
    use_pip: bool = False
    # fetch only: a tag that moved (or an sdist served with another sha256) is accepted
    accept_moved: bool = False

    def plan(self, factory: Factory) -> Plan:
        return factory.plan(self.release, self.targets, self.env, self.source_dirs, self.adopt)


@dataclass(frozen=True)
class Built:
    plan: Plan  # as executed: keyed by the sources' recorded content
    results: list[StepResult]


def build(factory: Factory, request: BuildRequest, echo: Echo) -> Built:
    """Build the request's targets and their dependencies into the wheelhouse."""
    return _sequence(factory, request, echo, fetch=False)


def fetch(factory: Factory, request: BuildRequest, echo: Echo) -> Built:
    """Resolve every source again (a moved tag is an error unless accept_moved) and download every
    source and build requirement, so that `build --offline` needs no network. Nothing is built."""
    return _sequence(factory, request, echo, fetch=True)


def _sequence(factory: Factory, request: BuildRequest, echo: Echo, *, fetch: bool) -> Built:
    p = request.plan(factory)
    forced: frozenset[str] = frozenset()
    if fetch:
        python_first(p, request.python)
        # One line for no network, before any remote is asked (not a git error per source).
        if (net := doctor.check_remotes([s for s in p.steps if s.source or s.extra_sources], factory.index_url,
                                        doctor.Probe())).level == FAIL:
            raise InputError(f"fetch: {net.message}")
    else:
        if blockers := cross_blockers(p.steps, p.target.platform):  # before any remote is asked anything
            raise InputError("\n".join(blockers))
        forced = components_to_rebuild(p, request.rebuild, request.force, factory.recipes)
        # The host check comes before any remote is asked: an unreachable network or a missing
        # interpreter is one line of its summary (exit 2), not one git error per source.
        if request.host_check:
            host_check(factory, p, request.python, forced, echo, offline=request.offline)
    # `fetch` asks again for every source; `build` resolves what was never resolved (a source
    # never fetched), so that the wheels are keyed by its content.
    if fetch or (not request.offline and any(s.unresolved for s in p.steps)):
        if not fetch and not request.host_check:
            python_first(p, request.python)
        if factory.resolve_sources(p, echo, refresh=fetch, accept_moved=request.accept_moved):
            p = request.plan(factory)  # keyed by the commits and hashes just recorded
            if not fetch:
                forced = components_to_rebuild(p, request.rebuild, request.force, factory.recipes)
    if fetch:
        factory.executor(p, echo, python=request.python, verbose=request.verbose).fetch()
        return Built(p, [])
    if not request.until and request.configure_check and (first := configure_first(p, factory.recipes)):
        _configure_first(factory, request, first, echo)
    results = factory.executor(p, echo, jobs=request.jobs, offline=request.offline, keep_work=request.keep_work,
                               python=request.python, verbose=request.verbose, until=request.until,
                               until_steps=request.targets, rebuild=forced, fresh=request.fresh,
                               wait=request.wait, use_pip=request.use_pip).build()
    return Built(p, results)


def python_first(plan: Plan, python: str | None) -> None:
    """A missing build interpreter is reported before any remote is asked for a commit or hash, as
    it is before anything is downloaded or built."""
    if any(s.action != CACHED for s in plan.steps):
        find_python(plan.target.python, python)


def host_check(factory: Factory, plan: Plan, python: str | None, forced: frozenset[str], echo: Echo,
               offline: bool = False) -> None:
    """`doctor`'s checks before a build: problems and the ccache line shown, a failure stops it (exit 2)."""
    checks = doctor.host_checks(plan, factory.host, factory.cache_dir, python, rebuild=forced,
                         nvcc=factory.build_nvcc(plan.release), sources=factory.sources,
                         index_url=factory.index_url, offline=offline)
    for c in checks:
        if c.level != OK or c.name == "ccache":
            echo(f"host: {c.line()}")
    if bad := failures(checks):
        raise InputError(f"the host check found {len(bad)} problem(s) that would fail the build ({FAIL} above); "
                         "nothing was built. `wheelfactory doctor` shows every check; --no-host-check skips them")


def _configure_first(factory: Factory, request: BuildRequest, first: ConfigureFirst, echo: Echo) -> None:
    """Configure an unchecked step against its dependencies adopted from the index, in a wheelhouse of its
    own, before the release's own builds: a device-code failure stops the build here (exit 1), with the table."""
    s = first.step
    echo(f"{s.component} {s.version}'s device code was never checked for {' '.join(s.unchecked_archs)}: configuring "
         f"it first, against {', '.join(first.adopt.values())} from the index, before the builds of "
         f"{', '.join(first.adopt)} (--no-configure-check skips this)")
    rel = request.release
    checker = dataclasses.replace(factory, wheelhouse_dir=check_dir(factory.cache_dir, rel.name) / "wheelhouse")
    # the user's --adopt after ours: a wheel given by hand wins
    cp = checker.plan(rel, [s.component], request.env, request.source_dirs, (*first.adopt_options(), *request.adopt))
    checker.executor(cp, echo, until="configure", until_steps=(s.component,), jobs=request.jobs,
                     offline=request.offline, python=request.python, verbose=request.verbose, fresh=request.fresh,
                     use_pip=request.use_pip).build()
    echo(f"{s.component} {s.version}: its configure's device code fits {' '.join(s.unchecked_archs)}; "
         "building the release")
