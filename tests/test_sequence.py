"""The build sequence as one library call (pipeline/sequence.py): `build` and `fetch` plan, check
the host, resolve sources, plan again keyed by their content, decide the rebuild set and execute,
in that order. Driven here with a recording factory; tests/test_check_order.py drives it through
the CLI."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.pipeline import sequence
from wheelfactory.pipeline.sequence import BuildRequest


class Recorder:
    """A factory that records what the sequence asks of it, in order."""

    def __init__(self, unresolved: bool = True, resolve_changes: bool = True):
        self.calls: list[str] = []
        self.plans = 0
        self.unresolved = unresolved
        self.resolve_changes = resolve_changes
        self.recipes = {}
        self.index_url = "https://pypi.org/simple"
        self.executor_options: dict = {}

    def plan(self, release, targets, env, source_dirs, adopt):
        self.plans += 1
        self.calls.append(f"plan {self.plans}")
        step = SimpleNamespace(component="nccl", action="build", source=object(), extra_sources={},
                               unresolved=("source",) if self.unresolved and self.plans == 1 else ())
        return SimpleNamespace(n=self.plans, steps=[step], target=SimpleNamespace(platform="linux_aarch64",
                                                                                 python="3.12"))

    def resolve_sources(self, plan, echo, *, refresh=False, accept_moved=False):
        self.calls.append(f"resolve refresh={refresh} accept_moved={accept_moved}")
        return self.resolve_changes

    def executor(self, plan, echo, **options):
        self.executor_options = options
        calls = self.calls

        class Run:
            def build(self):
                calls.append(f"build plan {plan.n}")
                return ["result"]

            def fetch(self):
                calls.append(f"fetch plan {plan.n}")
        return Run()


@pytest.fixture
def recorded(monkeypatch):
    def record(factory):
        monkeypatch.setattr(sequence, "cross_blockers", lambda steps, platform: [])
        monkeypatch.setattr(sequence, "configure_first", lambda plan, recipes: None)
        monkeypatch.setattr(sequence, "components_to_rebuild",
                            lambda plan, rebuild, force, recipes: factory.calls.append(f"rebuild set {plan.n}")
                            or frozenset({f"forced-{plan.n}"}))
        monkeypatch.setattr(sequence, "host_check", lambda f, plan, python, forced, echo, offline=False:
                            factory.calls.append(f"host check plan {plan.n} forced={sorted(forced)}"))
        monkeypatch.setattr(sequence, "python_first", lambda plan, python: factory.calls.append("python"))
        monkeypatch.setattr(sequence.doctor, "Probe", lambda: None)
        monkeypatch.setattr(sequence.doctor, "check_remotes", lambda steps, index, probe: factory.calls.append(
            "remotes") or SimpleNamespace(level="ok", message=""))
        return factory
    return record


REQUEST = BuildRequest(release=SimpleNamespace(name="r"), targets=("nccl",), python="python3.12")


def test_build_checks_the_host_resolves_and_builds_what_the_new_plan_keys(recorded):
    f = recorded(Recorder())
    built = sequence.build(f, REQUEST, lambda m: None)
    assert f.calls == ["plan 1", "rebuild set 1", "host check plan 1 forced=['forced-1']",
                       "resolve refresh=False accept_moved=False", "plan 2", "rebuild set 2", "build plan 2"]
    assert built.plan.n == 2 and built.results == ["result"]
    assert f.executor_options["rebuild"] == frozenset({"forced-2"})
    assert f.executor_options["until_steps"] == ("nccl",) and f.executor_options["python"] == "python3.12"


def test_build_plans_once_when_nothing_was_unresolved_or_resolving_changed_nothing(recorded):
    f = recorded(Recorder(unresolved=False))
    sequence.build(f, REQUEST, lambda m: None)
    assert f.calls == ["plan 1", "rebuild set 1", "host check plan 1 forced=['forced-1']", "build plan 1"]
    f = recorded(Recorder(resolve_changes=False))
    sequence.build(f, REQUEST, lambda m: None)
    assert f.calls == ["plan 1", "rebuild set 1", "host check plan 1 forced=['forced-1']",
                       "resolve refresh=False accept_moved=False", "build plan 1"]


def test_build_offline_asks_no_remote(recorded):
    f = recorded(Recorder())
    sequence.build(f, BuildRequest(release=REQUEST.release, offline=True), lambda m: None)
    assert f.calls == ["plan 1", "rebuild set 1", "host check plan 1 forced=['forced-1']", "build plan 1"]
    assert f.executor_options["offline"] is True


def test_build_without_the_host_check_still_finds_the_interpreter_before_any_remote(recorded):
    f = recorded(Recorder())
    sequence.build(f, BuildRequest(release=REQUEST.release, host_check=False), lambda m: None)
    assert f.calls == ["plan 1", "rebuild set 1", "python", "resolve refresh=False accept_moved=False",
                       "plan 2", "rebuild set 2", "build plan 2"]


def test_a_cross_blocker_stops_the_build_before_the_host_is_checked(recorded, monkeypatch):
    f = recorded(Recorder())
    monkeypatch.setattr(sequence, "cross_blockers", lambda steps, platform: ["torch cannot cross-build"])
    with pytest.raises(InputError, match="torch cannot cross-build"):
        sequence.build(f, REQUEST, lambda m: None)
    assert f.calls == ["plan 1"]


def test_fetch_asks_every_remote_again_and_downloads_for_the_new_plan(recorded):
    f = recorded(Recorder(unresolved=False))
    request = BuildRequest(release=REQUEST.release, python="python3.12", verbose=True, accept_moved=True,
                           jobs=8, offline=True)
    built = sequence.fetch(f, request, lambda m: None)
    assert f.calls == ["plan 1", "python", "remotes", "resolve refresh=True accept_moved=True", "plan 2",
                       "fetch plan 2"]
    assert built.plan.n == 2 and built.results == []
    # fetch downloads: the build options (jobs, offline, ...) are not its business
    assert f.executor_options == {"python": "python3.12", "verbose": True}


def test_fetch_without_a_network_says_so_before_resolving_anything(recorded, monkeypatch):
    f = recorded(Recorder())
    monkeypatch.setattr(sequence.doctor, "check_remotes", lambda steps, index, probe: SimpleNamespace(
        level=sequence.FAIL, message="github.com: no route"))
    with pytest.raises(InputError, match="^fetch: github.com: no route$"):
        sequence.fetch(f, REQUEST, lambda m: None)
    assert f.calls == ["plan 1", "python"]
