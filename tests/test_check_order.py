"""Checks before work, once: `build` runs the host check before any source is resolved, so an
unreachable network is one line of its summary (exit 2), and a git source on a local path or a
file:// URL (a mirror) is reachable without any network."""

from __future__ import annotations

from pathlib import Path

import pytest

import wheelfactory.host.doctor as doctor
from wheelfactory.core.errors import BuildError
from wheelfactory.host.doctor import FAIL, OK, check_network, local_repository, source_url
from wheelfactory.pipeline.factory import Factory
from wheelfactory.sources.kinds import GitSource

from .conftest import MINIMAL_RELEASE, invoke
from .test_doctor import probe


def _offline_host(monkeypatch, calls: list[str]):
    """host_checks against a host with no network at all and no python3.12, as a fake probe sees it."""
    real = doctor.host_checks

    def checks(*args, **kwargs):
        calls.append("host check")
        kwargs["probe"] = probe(unreachable=_EveryUrl())
        return real(*args, **kwargs)

    monkeypatch.setattr(doctor, "host_checks", checks)

    def resolve(self, *args, **kwargs):
        calls.append("resolve")
        raise AssertionError("a source was resolved before the host check stopped the build")

    monkeypatch.setattr(Factory, "resolve_sources", resolve)


class _EveryUrl(dict):
    """Every URL is unreachable, with one reason (never empty: probe() takes an empty dict for none)."""

    def __init__(self):
        super().__init__({"": ""})

    def get(self, url, default=None):
        return "ConnectionError: Network is unreachable"


def test_build_checks_the_host_before_asking_any_remote_and_fails_in_one_summary(tmp_path, monkeypatch):
    calls: list[str] = []
    _offline_host(monkeypatch, calls)
    r = invoke("--cache-dir", str(tmp_path / "c"), "--wheelhouse", str(tmp_path / "w"), "build",
               "--release", "0.33.0-t5")
    assert r.returncode == 2, r.stderr
    assert calls == ["host check"]
    lines = r.stderr.splitlines()
    # one line for the network, however many sources are unresolved (0.33.0-t5 has dozens of git ones)
    network = [line for line in lines if "does not answer" in line]
    assert len(network) == 1 and network[0].startswith("host: FAIL  network https://")
    assert any(line.startswith("host: FAIL  python") for line in lines)  # the interpreter, in the same summary
    assert "ls-remote" not in r.stderr
    assert lines[-1].startswith("error: the host check found")


def test_without_the_host_check_sources_are_still_resolved_first(tmp_path, monkeypatch):
    calls: list[str] = []
    _offline_host(monkeypatch, calls)
    monkeypatch.setattr("wheelfactory.pipeline.sequence.python_first", lambda *a: calls.append("python"))

    def resolve(self, *args, **kwargs):
        calls.append("resolve")
        raise BuildError("git ls-remote: could not resolve host")

    monkeypatch.setattr(Factory, "resolve_sources", resolve)
    r = invoke("--cache-dir", str(tmp_path / "c"), "--wheelhouse", str(tmp_path / "w"), "build",
               "--no-host-check", "--release", "0.33.0-t5")
    assert r.returncode == 1 and calls == ["python", "resolve"], r.stderr


def _git_release(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(MINIMAL_RELEASE + f'[components.nccl.source]\ngit = "{url}"\nref = "v2.29.2-1"\n')
    return path


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_a_git_source_on_a_local_path_is_reachable_without_a_network(factory, tmp_path, form):
    mirror = tmp_path / "mirrors" / "nccl"
    mirror.mkdir(parents=True)
    url = str(mirror) if form == "path" else f"file://{mirror}"
    steps = factory.plan(factory.release(str(_git_release(tmp_path, url)))).steps
    assert local_repository(steps[0].source) == mirror
    down = probe(unreachable=_EveryUrl(), files={str(mirror)})
    c = check_network(steps, factory.sources, "https://pypi.org/simple", False, down)
    assert (c.level, c.message) == (OK, "to fetch: nccl; from local paths")


def test_a_local_git_source_that_is_not_there_is_named(factory, tmp_path):
    steps = factory.plan(factory.release(str(_git_release(tmp_path, "/srv/mirrors/nccl")))).steps
    c = check_network(steps, factory.sources, "https://pypi.org/simple", False, probe())
    assert c.level == FAIL
    assert c.message.startswith("no git repository at the local path of nccl (/srv/mirrors/nccl): fix the source's")


def test_remote_git_urls_are_probed_where_they_point():
    assert local_repository(GitSource("https://github.com/NVIDIA/nccl.git", "v1")) is None
    assert local_repository(GitSource("git@github.com:NVIDIA/nccl.git", "v1")) is None
    assert local_repository(GitSource("~/mirrors/nccl", "v1")) == Path("~/mirrors/nccl").expanduser()
    assert source_url(GitSource("git@github.com:NVIDIA/nccl.git", "v1"), "https://i") == "ssh://github.com"
    assert source_url(GitSource("https://github.com/NVIDIA/nccl.git", "v1"), "https://i") == \
        "https://github.com/NVIDIA/nccl.git"


# -- vLLM's configure before torch's hours -----------------------------------------------------------

class _FakeExecutor:
    def __init__(self, runs: list, plan, options: dict, fail_until: bool):
        self.runs, self.plan, self.options, self.fail_until = runs, plan, options, fail_until

    def build(self):
        self.runs.append((self.plan, self.options))
        if self.options.get("until") and self.fail_until:
            raise BuildError("[vllm] configure: 57 CUDA object(s) have no code a 12.1a device loads natively:\n"
                             "  target  source  -gencode ...")
        return []


def _record_builds(monkeypatch, fail_until: bool = False) -> list:
    runs: list = []
    monkeypatch.setattr(Factory, "resolve_sources", lambda self, *a, **k: False)
    monkeypatch.setattr(Factory, "executor", lambda self, plan, echo, **options: _FakeExecutor(
        runs, plan, options | {"wheelhouse": self.wheelhouse_dir}, fail_until))
    return runs


def test_an_unchecked_vllm_is_configured_against_adopted_dependencies_before_torch_is_built(tmp_path, monkeypatch):
    runs = _record_builds(monkeypatch)
    r = invoke("--cache-dir", str(tmp_path / "c"), "--wheelhouse", str(tmp_path / "w"), "build", "--no-host-check",
               "--release", "0.15.0-t4")
    assert r.returncode == 0, r.stderr
    (check, opts), (full, full_opts) = runs
    assert opts["until"] == "configure" and opts["until_steps"] == ("vllm",)
    assert opts["wheelhouse"] == tmp_path / "c" / "configure-check" / "0.15.0-t4" / "wheelhouse"
    # the README's hand-made recipe: every dependency adopted from the index, vLLM built to configure
    assert {s.component: (s.action, s.adopt) for s in check.steps} == {
        "nccl": ("adopt", "nvidia-nccl-cu13==2.29.2"), "torch": ("adopt", "torch==2.10.0"),
        "triton": ("adopt", "triton==3.5.1"), "flashinfer": ("adopt", "flashinfer-python==0.6.2"),
        "vllm": ("build", None)}
    assert full_opts.get("until") is None and full_opts["wheelhouse"] == tmp_path / "w"
    assert [s.component for s in full.steps if s.action == "build"][:2] == ["nccl", "torch"]
    assert "vllm 0.15.0's device code was never checked for 12.1a: configuring it first" in r.stderr


def test_a_failed_configure_check_stops_before_torch(tmp_path, monkeypatch):
    runs = _record_builds(monkeypatch, fail_until=True)
    r = invoke("--cache-dir", str(tmp_path / "c"), "--wheelhouse", str(tmp_path / "w"), "build", "--no-host-check",
               "--release", "0.15.0-t4")
    assert r.returncode == 1 and len(runs) == 1 and "57 CUDA object(s)" in r.stderr


@pytest.mark.parametrize("args", [["--release", "0.33.0-t5"],  # vLLM 0.33.0 was checked for 12.1a
                                  ["--release", "0.15.0-t4", "--no-configure-check"],
                                  ["--release", "0.15.0-t4", "vllm", "--until", "configure"]])
def test_no_configure_check_when_checked_skipped_or_asked_for_by_hand(tmp_path, monkeypatch, args):
    runs = _record_builds(monkeypatch)
    r = invoke("--cache-dir", str(tmp_path / "c"), "--wheelhouse", str(tmp_path / "w"), "build", "--no-host-check",
               *args)
    assert r.returncode == 0, r.stderr
    assert len(runs) == 1 and "configuring it first" not in r.stderr


def test_fetch_without_a_network_says_so_in_one_line_before_asking_any_remote(tmp_path, monkeypatch):
    calls: list[str] = []
    _offline_host(monkeypatch, calls)
    monkeypatch.setattr(doctor, "Probe", lambda: probe(unreachable=_EveryUrl()))
    monkeypatch.setattr("wheelfactory.pipeline.sequence.python_first", lambda *a: None)
    r = invoke("--cache-dir", str(tmp_path / "c"), "fetch", "--release", "0.33.0-t5")
    assert r.returncode == 2 and calls == []  # resolve_sources was never called
    [line] = r.stderr.splitlines()
    assert line.startswith("error: fetch: https://") and "does not answer (ConnectionError" in line


def test_fetch_names_a_local_mirror_that_is_not_there(tmp_path, monkeypatch):
    calls: list[str] = []
    _offline_host(monkeypatch, calls)
    monkeypatch.setattr(doctor, "Probe", lambda: probe(unreachable=_EveryUrl()))
    monkeypatch.setattr("wheelfactory.pipeline.sequence.python_first", lambda *a: None)
    r = invoke("--cache-dir", str(tmp_path / "c"), "fetch", "--release", str(_git_release(tmp_path, "/srv/m/nccl")))
    assert r.returncode == 2 and calls == [] and "no git repository at /srv/m/nccl" in r.stderr
