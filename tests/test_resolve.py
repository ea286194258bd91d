"""Sources keyed by content: git refs resolved to commits and recorded, sdists and archives keyed by
sha256, moved tags reported, branches followed only on request, plain http refused.

Fast tests work on ls-remote text, a fake runner and records written by hand; the slow ones
(marked) run git on local bare repositories.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from wheelfactory.cli.app import cli
from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning.plan import plan_release
from wheelfactory.planning.recipe import Target, load_recipes
from wheelfactory.planning.release import load_release
from wheelfactory.run.runner import Runner
from wheelfactory.sources.fetch import SourceCache
from wheelfactory.sources.kinds import GitSource, PypiSource, UrlSource, commit_of, source_from_table

from .conftest import CI_RELEASES, RECIPES, SPARK

A, B = "a" * 40, "b" * 40
URL = "https://example.invalid/repo.git"
TARGET = Target("3.12", "13.1.0", ("12.1a",), "linux_aarch64", "wheels:13.1.0:test")


class FakeRemote:
    """A runner whose `git ls-remote` answers from a dict of refs (refs/tags/v1 -> commit)."""

    def __init__(self, refs: dict[str, str]):
        self.refs = refs
        self.calls = 0

    def run(self, cmd, **_kw) -> str:
        assert cmd[:2] == ["git", "ls-remote"], cmd
        self.calls += 1
        return "\n".join(f"{sha}\t{name}" for name, sha in self.refs.items())


# -- git refs (pure) -------------------------------------------------------------------------------

def test_a_branch_without_follow_is_refused_with_the_reason():
    out = f"{A}\trefs/heads/dgxspark-3node-ring\n"
    with pytest.raises(InputError) as e:
        commit_of(GitSource(URL, "dgxspark-3node-ring"), out)
    assert "is a branch" in str(e.value) and "follow = true" in str(e.value) and "moves" in str(e.value)
    assert commit_of(GitSource(URL, "dgxspark-3node-ring", follow=True), out) == (A, "branch")


def test_an_annotated_tag_resolves_to_its_commit_and_wins_over_a_branch():
    out = f"{B}\trefs/tags/v1\n{A}\trefs/tags/v1^{{}}\n{'c' * 40}\trefs/heads/v1\n"
    assert commit_of(GitSource(URL, "v1"), out) == (A, "tag")
    with pytest.raises(InputError, match="follow = true is for a branch, and 'v1' is a tag"):
        commit_of(GitSource(URL, "v1", follow=True), out)


def test_an_unknown_ref_says_so_and_an_abbreviated_commit_gets_a_hint():
    with pytest.raises(InputError, match="no such tag or branch") as e:
        commit_of(GitSource(URL, "86f8f15"), f"{A}\trefs/tags/v1\n")
    assert "all 40 hex digits" in str(e.value)


@pytest.mark.parametrize("table, message", [
    ({"git": URL, "ref": "main", "follow": "yes"}, "s.follow: expected true or false, got 'yes'"),
    ({"git": URL, "ref": A, "follow": True}, "s.follow: ref 'aaaa"),
    ({"git": "http://example.invalid/r.git", "ref": "v1"}, "s.git: 'http://example.invalid/r.git' is fetched "
                                                           "over plain http"),
    ({"git": "git://example.invalid/r.git", "ref": "v1"}, "over plain git"),
    ({"url": "http://example.invalid/a.tar.gz", "sha256": "0" * 64}, "set s.allow_insecure = true"),
])
def test_bad_source_tables_are_refused(tmp_path, table, message):
    with pytest.raises(InputError) as e:
        source_from_table(table, "s", tmp_path)
    assert message in str(e.value)


def test_plain_http_is_accepted_only_when_allowed(tmp_path):
    s = source_from_table({"url": "http://mirror.lan/a.tar.gz", "sha256": "0" * 64, "allow_insecure": True}, "s",
                          tmp_path)
    assert isinstance(s, UrlSource) and s.allow_insecure
    # A recipe's own http URL is refused at fetch, before anything is downloaded.
    with pytest.raises(InputError, match="plain http"):
        SourceCache(tmp_path / "c").fetch(UrlSource("http://mirror.lan/a.tar.gz", "0" * 64),
                                          Runner("t", tmp_path / "l"))
    assert not (tmp_path / "c" / "sources" / "archives").exists()


def test_an_http_index_is_refused_unless_allowed(tmp_path):
    common = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c")]
    refused = CliRunner().invoke(cli, [*common, "--index-url", "http://index.lan/simple", "list"])
    assert isinstance(refused.exception, InputError) and refused.exception.exit_code == 2
    assert "--index-url: 'http://index.lan/simple' is fetched over plain http" in str(refused.exception)
    assert "--allow-insecure-index" in str(refused.exception)
    allowed = CliRunner().invoke(cli, [*common, "--index-url", "http://index.lan/simple", "--allow-insecure-index",
                                       "list"])
    assert allowed.exit_code == 0, allowed.output


# -- keys use the recorded content (plan with a fake record) ---------------------------------------

@pytest.fixture(scope="module")
def spark_release():
    recipes = load_recipes(RECIPES)
    return load_release("0.15.0-t4", recipes, RECIPES), recipes


def test_the_key_follows_the_recorded_commit(spark_release):
    release, recipes = spark_release

    def plan(commit):
        return plan_release(release, recipes, TARGET, ["torch"], recorded=lambda s: commit)

    unresolved, at_a, at_b = plan(None), plan(A), plan(B)
    assert unresolved.step("nccl").unresolved == ("source",)
    assert unresolved.step("nccl").key_inputs["source"]["unresolved"] == "run `wheelfactory fetch`"
    assert at_a.step("nccl").unresolved == () and at_a.step("nccl").to_json()["unresolved"] == []
    assert at_a.step("nccl").key_inputs["source"] == {"git_commit": A, "submodules": False}
    keys = {p.step("nccl").key for p in (unresolved, at_a, at_b)}
    assert len(keys) == 3
    # torch builds against nccl: its key moves with nccl's commit too (and with its own).
    assert at_a.step("torch").key != at_b.step("torch").key
    assert plan(A).step("torch").key == at_a.step("torch").key


def test_a_commit_ref_needs_no_record_and_the_url_is_not_content():
    assert GitSource(URL, A).identity() == {"git_commit": A, "submodules": True}
    assert GitSource("https://mirror.invalid/fork.git", A).identity() == GitSource(URL, A).identity()
    assert GitSource(URL, "v1").identity(A) == GitSource(URL, A).identity()
    # A 40-hex ref is its own record: nothing is read (this cache directory does not exist).
    assert SourceCache(Path("/nonexistent")).recorded(GitSource(URL, A)) == A


def test_a_pypi_source_is_keyed_by_the_sha256_recorded_for_its_index(tmp_path):
    sha = "5" * 64

    def factory(index):
        return Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", index_url=index, host_probe=lambda: SPARK,
                       system_cuda=True)

    pypi = factory("https://pypi.org/simple")
    release = pypi.release(str(CI_RELEASES / "ci.toml"))
    before = pypi.plan(release, ["flashinfer"]).step("flashinfer")
    assert before.unresolved == ("source",)
    source = PypiSource("flashinfer-python", "0.6.2")
    pypi.sources.records.put(source.record_key("https://pypi.org/simple"),
                             {"sha256": sha, "filename": "flashinfer_python-0.6.2.tar.gz"})
    after = pypi.plan(release, ["flashinfer"]).step("flashinfer")
    assert after.key_inputs["source"] == {"archive_sha256": sha} and after.key != before.key
    other = "6" * 64
    pypi.sources.records.put(source.record_key("https://pypi.org/simple"), {"sha256": other, "filename": "x"})
    assert factory("https://pypi.org/simple").plan(release, ["flashinfer"]).step("flashinfer").key not in (
        before.key, after.key)
    # The same name and version on another index is another file: not keyed by PyPI's record.
    elsewhere = factory("https://mirror.example/simple").plan(release, ["flashinfer"]).step("flashinfer")
    assert elsewhere.unresolved == ("source",)
    record = json.loads((tmp_path / "cache" / "sources" / "resolved.json").read_text())
    entry = record["sources"]["pypi https://pypi.org/simple flashinfer-python==0.6.2"]
    assert entry["sha256"] == other and entry["recorded"].endswith("Z")


def test_a_pinned_sha256_is_the_key_without_any_record():
    assert PypiSource("vllm", "0.14.1", "7" * 64).identity() == {"archive_sha256": "7" * 64}
    assert UrlSource("https://x/a.tar.gz", None).identity("8" * 64) == {"archive_sha256": "8" * 64}
    assert "unresolved" in UrlSource("https://x/a.tar.gz", None).identity()


# -- moved tags and followed branches (fake remote) ------------------------------------------------

def test_a_moved_tag_is_reported_and_kept_until_accepted(tmp_path):
    cache = SourceCache(tmp_path / "c")
    tag = GitSource(URL, "v1")
    remote = FakeRemote({"refs/tags/v1": A})
    assert cache.resolve(tag, remote) is None and cache.recorded(tag) == A
    remote.refs["refs/tags/v1"] = B
    assert cache.resolve(tag, remote) is None and remote.calls == 1  # build: a recorded tag is not asked again
    with pytest.raises(BuildError) as e:
        cache.resolve(tag, remote, refresh=True)
    assert e.value.exit_code == 1
    assert f"was {A}, is now {B}" in str(e.value) and "--accept-moved-tags" in str(e.value)
    assert f'ref = "{A}"' in str(e.value)
    assert SourceCache(tmp_path / "c").recorded(tag) == A  # the record (and so the key) stays
    note = cache.resolve(tag, remote, refresh=True, accept_moved=True)
    assert note == f"tag v1 of {URL} moved (accepted): {A} -> {B}"
    assert SourceCache(tmp_path / "c").recorded(tag) == B


def test_a_followed_branch_moves_on_at_every_fetch(tmp_path):
    cache = SourceCache(tmp_path / "c")
    branch = GitSource(URL, "main", follow=True)
    remote = FakeRemote({"refs/heads/main": A})
    cache.resolve(branch, remote, refresh=True)
    remote.refs["refs/heads/main"] = B
    assert cache.resolve(branch, remote, refresh=True) == f"branch main of {URL} moved: {A} -> {B}"
    assert cache.recorded(branch) == B
    # Without follow the same record pins nothing, and resolving it again says why.
    assert cache.recorded(GitSource(URL, "main")) is None
    with pytest.raises(InputError, match="is a branch"):
        cache.resolve(GitSource(URL, "main"), remote)


def test_offline_without_a_record_says_to_run_fetch(tmp_path):
    with pytest.raises(BuildError, match="never resolved .* run `wheelfactory fetch"):
        SourceCache(tmp_path / "c").fetch(GitSource(URL, "v1"), Runner("t", tmp_path / "l"), offline=True)


def test_a_damaged_record_file_is_named(tmp_path):
    path = tmp_path / "c" / "sources" / "resolved.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(BuildError, match="resolved.json: not a source record .* delete it"):
        SourceCache(tmp_path / "c").recorded(GitSource(URL, "v1"))


# -- real git (slow) -------------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path):
    """A bare repository (the remote) and a work clone that pushes to it."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")

    def commit(text: str) -> str:
        (work / "a.txt").write_text(text)
        git(work, "add", "a.txt")
        git(work, "commit", "-qm", text)
        git(work, "push", "-q", "origin", "main")
        return git(work, "rev-parse", "HEAD")

    return bare, work, commit


def _release(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "rel.toml"
    path.write_text('[target]\npython = "3.11"\ncuda = "13.0"\ncuda_arch_list = ["12.1a"]\n'
                    f'platform = "linux_x86_64"\n[components.nccl]\nversion = "2.29.2-1"\nsource = {source}\n')
    return path


@pytest.mark.slow
def test_moved_tag_with_a_real_repository(tmp_path, upstream):
    bare, work, commit = upstream
    first = commit("one\n")
    git(work, "tag", "-a", "v1", "-m", "v1")
    git(work, "push", "-q", "origin", "v1")
    factory = Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK, system_cuda=True)
    release = factory.release(str(_release(tmp_path, f'{{ git = "{bare.as_uri()}", ref = "v1" }}')))
    plan = factory.plan(release, ["nccl"])
    assert plan.step("nccl").unresolved == ("source",)
    assert factory.resolve_sources(plan, print, refresh=True) is True
    planned = factory.plan(release, ["nccl"]).step("nccl")
    assert planned.key_inputs["source"] == {"git_commit": first, "submodules": True}
    assert planned.key != plan.step("nccl").key
    runner = Runner("t", tmp_path / "log")
    tree = factory.sources.fetch(planned.source, runner)
    assert tree.name == f"git-{first}" and (tree / "a.txt").read_text() == "one\n"

    second = commit("two\n")  # the tag is moved to a new commit and force-pushed
    git(work, "tag", "-f", "-a", "v1", "-m", "v1 again")
    git(work, "push", "-q", "-f", "origin", "v1")
    assert factory.resolve_sources(plan, print) is False  # build: the recorded commit stands
    with pytest.raises(BuildError) as e:
        factory.resolve_sources(plan, print, refresh=True)
    assert f"[components.nccl].source: tag v1 of {bare.as_uri()} changed" in str(e.value)
    assert first in str(e.value) and second in str(e.value)
    assert factory.plan(release, ["nccl"]).step("nccl").key == planned.key

    notes: list[str] = []
    assert factory.resolve_sources(plan, notes.append, refresh=True, accept_moved=True) is True
    assert notes == [f"[nccl] tag v1 of {bare.as_uri()} moved (accepted): {first} -> {second}"]
    moved = factory.plan(release, ["nccl"]).step("nccl")
    assert moved.key != planned.key and moved.key_inputs["source"]["git_commit"] == second
    assert (factory.sources.fetch(moved.source, runner) / "a.txt").read_text() == "two\n"
    assert (tree / "a.txt").read_text() == "one\n"  # the old commit's tree is another directory


@pytest.mark.slow
def test_follow_re_resolves_a_real_branch_and_without_follow_is_refused(tmp_path, upstream):
    bare, _work, commit = upstream
    first = commit("one\n")
    factory = Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK, system_cuda=True)
    unfollowed = factory.release(str(_release(tmp_path, f'{{ git = "{bare.as_uri()}", ref = "main" }}')))
    with pytest.raises(InputError, match=r"rel.toml \[components.nccl\].source: .* is a branch"):
        factory.resolve_sources(factory.plan(unfollowed, ["nccl"]), print, refresh=True)

    release = factory.release(str(_release(tmp_path, f'{{ git = "{bare.as_uri()}", ref = "main", follow = true }}')))
    factory.resolve_sources(factory.plan(release, ["nccl"]), print, refresh=True)
    at_first = factory.plan(release, ["nccl"]).step("nccl")
    assert at_first.key_inputs["source"]["git_commit"] == first
    second = commit("two\n")
    factory.resolve_sources(factory.plan(release, ["nccl"]), print)  # build: what fetch recorded
    assert factory.plan(release, ["nccl"]).step("nccl").key == at_first.key
    notes: list[str] = []
    assert factory.resolve_sources(factory.plan(release, ["nccl"]), notes.append, refresh=True) is True
    assert notes == [f"[nccl] branch main of {bare.as_uri()} moved: {first} -> {second}"]
    at_second = factory.plan(release, ["nccl"]).step("nccl")
    assert at_second.key != at_first.key and at_second.key_inputs["source"]["git_commit"] == second
    tree = factory.sources.fetch(at_second.source, Runner("t", tmp_path / "log"))
    assert (tree / "a.txt").read_text() == "two\n"
