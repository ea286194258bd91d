"""`wheelfactory cache list` / `cache gc` on a fabricated cache: what goes, what stays (a running
build's work tree, published wheels, sources a release uses), and --dry-run removing nothing."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_executor import HOST
from tests.test_wheelhouse import make_wheel
from wheelfactory.cli.app import cli
from wheelfactory.core.interrupt import file_lock
from wheelfactory.pipeline.cachestore import CacheStore, busy
from wheelfactory.pipeline.factory import Factory
from wheelfactory.store.verify import verify_wheelhouse

USED_COMMIT = "a" * 40
OLD_COMMIT = "b" * 40
URL_SHA = "c" * 64
PYPI_SHA = "d" * 64  # recorded for the sdist on another index than the default
STALE_SHA = "e" * 64

RECIPE = '''
from wheelfactory.planning.recipe import Recipe
RECIPE = Recipe(name={name!r}, summary="test", source=None, outputs=({name!r},))
'''


def fill(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def lab(tmp_path) -> Factory:
    recipes = tmp_path / "recipes"
    (recipes / "releases").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (recipes / f"{name}.py").write_text(RECIPE.format(name=name))
    (recipes / "releases" / "r.toml").write_text(
        "[target]\npython = '3.11'\ncuda = '13.0'\ncuda_arch_list = ['9.0']\nplatform = 'linux_x86_64'\n"
        "system_cuda = true\n"
        f"[components.a]\nversion = '1.0'\n"
        f"source = {{ git = 'https://example.invalid/a.git', ref = '{USED_COMMIT}' }}\n"
        f"[components.b]\nversion = '1.0'\n"
        f"source = {{ url = 'https://example.invalid/b.tar.gz', sha256 = '{URL_SHA}' }}\n"
        "[components.c]\nversion = '1.0'\nsource = { pypi = 'c' }\n")
    cache = tmp_path / "cache"
    sources = cache / "sources"
    sources.mkdir(parents=True)
    (sources / "resolved.json").write_text(json.dumps({"version": 1, "sources": {
        "pypi https://mirror.example.invalid/simple c==1.0": {"sha256": PYPI_SHA, "filename": "c-1.0.tar.gz",
                                                             "recorded": "2025-01-01T00:00:00Z"}}}))
    for content in (f"git-{USED_COMMIT}", f"git-{OLD_COMMIT}", f"sha256-{URL_SHA}", f"sha256-{PYPI_SHA}",
                    f"sha256-{STALE_SHA}"):
        fill(sources / "trees" / content / "src.c", 1000)
    fill(sources / "archives" / f"{URL_SHA}-b.tar.gz", 300)
    fill(sources / "archives" / f"{STALE_SHA}-z.tar.gz", 700)
    old = fill(sources / "trees" / ".fetch-old" / "t" / "f", 10).parent.parent
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fill(sources / "trees" / ".fetch-new" / "t" / "f", 10)
    return Factory(recipes, tmp_path / "wh", cache, host_probe=lambda: HOST, system_cuda=True)


def work_tree(cache: Path, name: str, size: int = 5000) -> tuple[Path, Path]:
    tree = cache / "work" / name
    fill(tree / "src" / "big.o", size)
    fill(tree / "build_env.sh", 100)
    lock = cache / "work" / f"{name}.lock"
    lock.write_text("")
    return tree, lock


def test_sources_in_use_are_the_planned_commits_and_hashes_on_any_index(lab):
    keep, planned = lab.sources_in_use(["r"])
    assert planned == ["r"]
    assert keep == {USED_COMMIT, URL_SHA, PYPI_SHA}


def test_gc_keeps_a_running_builds_tree_and_staged_copy_and_takes_the_rest(lab):
    cache = lab.cache_dir
    idle, idle_lock = work_tree(cache, "a-111111111111")
    running, running_lock = work_tree(cache, "b-222222222222")
    fill(cache / "staged" / "111111111111" / "a-1.0-py3-none-any.whl", 400)
    fill(cache / "staged" / "222222222222" / "b-1.0-py3-none-any.whl", 400)
    dead = fill(cache / "work" / ".trash-999999999-1-a-333333333333" / "f", 50).parent
    alive = fill(cache / "work" / f".trash-{os.getpid()}-1-a-444444444444" / "f", 50).parent
    store = CacheStore(cache, lab.wheelhouse)
    with file_lock(running_lock):  # a build of key 222222222222 holds its lock
        assert busy(running_lock) and not busy(idle_lock)
        plan = store.plan_gc(keep_sources=None, sources_note="--keep-sources")
        gone = {i.path for i in plan.remove}
        assert gone == {idle, dead, cache / "staged" / "111111111111"}
        assert any(str(running) in s and "in use by a running build" in s for s in plan.skipped)
        assert any("staged/222222222222" in s for s in plan.skipped)
        assert f"{cache / 'sources'}: left alone (--keep-sources)" in plan.skipped
        assert plan.bytes == sum(i.size for i in plan.remove) >= 5100 + 400 + 50
        freed = store.run_gc(plan, echo=lambda m: None)
        assert freed == plan.bytes
    assert not idle.exists() and not dead.exists() and not (cache / "staged" / "111111111111").exists()
    assert (running / "src" / "big.o").exists() and (cache / "staged" / "222222222222").exists()
    assert alive.exists()  # its process (this one) still runs
    assert idle_lock.exists() and running_lock.exists()  # lock files stay: a waiter may have one open
    assert (cache / "sources" / "trees" / f"git-{OLD_COMMIT}").exists()  # sources untouched


def test_a_build_that_starts_between_plan_and_removal_keeps_its_tree(lab):
    tree, lock = work_tree(lab.cache_dir, "a-555555555555")
    store = CacheStore(lab.cache_dir, lab.wheelhouse)
    plan = store.plan_gc(None)
    said = []
    with file_lock(lock):
        assert store.run_gc(plan, said.append) == 0
    assert tree.exists() and said == [f"kept {tree}: a build started using it"]


def test_gc_removes_sources_no_release_uses(lab):
    store = CacheStore(lab.cache_dir, lab.wheelhouse)
    keep, _ = lab.sources_in_use(["r"])
    plan = store.plan_gc(keep)
    trees = lab.cache_dir / "sources" / "trees"
    archives = lab.cache_dir / "sources" / "archives"
    assert {i.path for i in plan.remove} == {trees / f"git-{OLD_COMMIT}", trees / f"sha256-{STALE_SHA}",
                                             trees / ".fetch-old", archives / f"{STALE_SHA}-z.tar.gz"}
    store.run_gc(plan, echo=lambda m: None)
    assert sorted(p.name for p in trees.iterdir()) == [".fetch-new", f"git-{USED_COMMIT}", f"sha256-{URL_SHA}",
                                                       f"sha256-{PYPI_SHA}"]
    assert [p.name for p in archives.iterdir()] == [f"{URL_SHA}-b.tar.gz"]


def test_sources_are_left_alone_while_a_build_runs(lab):
    _, lock = work_tree(lab.cache_dir, "a-666666666666")
    store = CacheStore(lab.cache_dir, lab.wheelhouse)
    with file_lock(lock):
        plan = store.plan_gc({USED_COMMIT})
    assert not [i for i in plan.remove if i.kind in ("source-tree", "archive", "temp")]
    assert any("left alone (a build or fetch is running" in s for s in plan.skipped)


def test_gc_takes_only_superseded_attic_entries_and_never_a_published_wheel(lab, tmp_path):
    wh = lab.wheelhouse
    with wh.lock():
        wh.publish([make_wheel(tmp_path / "old", "demo", "1.0", b"old")], {"component": "demo", "key": "k1"})
        wh.publish([make_wheel(tmp_path / "new", "demo", "1.0", b"new")], {"component": "demo", "key": "k2"})
        wh.publish([make_wheel(tmp_path / "q", "gone", "2.0", b"q")], {"component": "gone", "key": "k3"})
        wh.quarantine(["gone-2.0-py3-none-any.whl"])  # corrupt, not built again yet: the attic holds the only copy
    attic = wh.root / "attic"
    shutil.copy(attic / "demo-1.0-py3-none-any.whl", attic / "20250101T000000-demo-1.0-py3-none-any.whl")
    published = {p.name: p.read_bytes() for p in wh.root.glob("*.whl")}
    store = CacheStore(lab.cache_dir, wh)
    assert dict((p.name, s) for p, s in store.attic_entries()) == {
        "20250101T000000-demo-1.0-py3-none-any.whl": True, "demo-1.0-py3-none-any.whl": True,
        "gone-2.0-py3-none-any.whl": False}
    plan = store.plan_gc(None)
    assert {i.path.name for i in plan.remove} == {"demo-1.0-py3-none-any.whl",
                                                  "20250101T000000-demo-1.0-py3-none-any.whl"}
    assert all(i.path.parent == attic for i in plan.remove)
    store.run_gc(plan, echo=lambda m: None)
    assert [p.name for p in attic.iterdir()] == ["gone-2.0-py3-none-any.whl"]
    assert {p.name: p.read_bytes() for p in wh.root.glob("*.whl")} == published
    assert verify_wheelhouse(wh) == []


def test_gc_takes_a_superseded_attic_link_even_dangling_and_never_its_target(lab, tmp_path):
    """A wheel that was a symbolic link goes to attic/ as the link: gc judges it by its name like a
    file (it was skipped, so a dangling one stayed for ever), sizes it as the link, and removes the
    link only, never what it points at."""
    wh = lab.wheelhouse
    with wh.lock():
        wh.publish([make_wheel(tmp_path / "new", "demo", "1.0", b"new")], {"component": "demo", "key": "k2"})
    attic = wh.root / "attic"
    attic.mkdir(exist_ok=True)
    target = make_wheel(tmp_path / "elsewhere", "demo", "1.0", b"old")
    kept = target.read_bytes()
    (attic / "20250101T000000-demo-1.0-py3-none-any.whl").symlink_to(target)
    (attic / "20250102T000000-demo-1.0-py3-none-any.whl").symlink_to(tmp_path / "gone.whl")  # dangling
    store = CacheStore(lab.cache_dir, wh)
    assert dict((p.name, s) for p, s in store.attic_entries()) == {
        "20250101T000000-demo-1.0-py3-none-any.whl": True, "20250102T000000-demo-1.0-py3-none-any.whl": True}
    plan = store.plan_gc(None)
    sizes = {i.path.name: i.size for i in plan.remove if i.kind == "attic"}
    assert sizes == {"20250101T000000-demo-1.0-py3-none-any.whl": len(str(target)),
                     "20250102T000000-demo-1.0-py3-none-any.whl": len(str(tmp_path / "gone.whl"))}
    store.run_gc(plan, echo=lambda m: None)
    assert list(attic.iterdir()) == []
    assert target.read_bytes() == kept


def test_cache_list_sizes_attic_links_as_links(lab, tmp_path):
    attic = lab.wheelhouse.root / "attic"
    attic.mkdir(parents=True, exist_ok=True)
    big = tmp_path / "big.whl"
    big.write_bytes(b"x" * 5_000_000)
    (attic / "20250101T000000-demo-1.0-py3-none-any.whl").symlink_to(big)
    (attic / "20250102T000000-demo-1.0-py3-none-any.whl").symlink_to(tmp_path / "gone.whl")
    res = _cli(lab, "cache", "list")
    assert res.exit_code == 0, res.output
    line = next(s for s in res.output.splitlines() if s.startswith("wheelhouse attic"))
    assert f": 2 wheel(s), {len(str(big)) + len(str(tmp_path / 'gone.whl'))} B;" in line


def test_attic_is_left_alone_while_the_wheelhouse_is_locked(lab, tmp_path):
    wh = lab.wheelhouse
    with wh.lock():
        wh.publish([make_wheel(tmp_path / "old", "demo", "1.0", b"old")], {"component": "demo", "key": "k1"})
        wh.publish([make_wheel(tmp_path / "new", "demo", "1.0", b"new")], {"component": "demo", "key": "k2"})
    store = CacheStore(lab.cache_dir, wh)
    plan = store.plan_gc(None)
    said = []
    with file_lock(wh.root / ".lock"):  # another wheelfactory process is publishing
        assert store.run_gc(plan, said.append) == 0
    assert (wh.root / "attic" / "demo-1.0-py3-none-any.whl").exists()
    assert said and "holds the wheelhouse lock" in said[0]


def _cli(lab: Factory, *args: str):
    base = ["--recipes-dir", str(lab.recipes_dir), "--wheelhouse", str(lab.wheelhouse_dir), "--cache-dir",
            str(lab.cache_dir)]
    return CliRunner().invoke(cli, [*base, *args], obj=None, catch_exceptions=False)


def test_cli_dry_run_lists_what_would_go_and_removes_nothing(lab):
    tree, _ = work_tree(lab.cache_dir, "a-777777777777")
    before = sorted(str(p) for p in lab.cache_dir.rglob("*"))
    res = _cli(lab, "cache", "gc", "--dry-run", "--release", "r")
    assert res.exit_code == 0, res.output
    assert "would remove work" in res.output and str(tree) in res.output
    assert f"git-{OLD_COMMIT}" in res.output and f"git-{USED_COMMIT}" not in res.output
    assert "would be freed; nothing removed" in res.output
    assert sorted(str(p) for p in lab.cache_dir.rglob("*")) == before


def test_cli_gc_and_list(lab):
    work_tree(lab.cache_dir, "a-888888888888")
    res = _cli(lab, "cache", "list")
    assert res.exit_code == 0, res.output
    assert "work trees" in res.output and "source trees" in res.output and "a-888888888888" in res.output
    res = _cli(lab, "cache", "gc", "--keep-sources")
    assert res.exit_code == 0, res.output
    assert "freed " in res.output and not (lab.cache_dir / "work" / "a-888888888888").exists()
    assert (lab.cache_dir / "sources" / "trees" / f"git-{OLD_COMMIT}").exists()


def test_cli_gc_with_an_unknown_release_is_bad_input(lab):
    work_tree(lab.cache_dir, "a-999999999999")
    res = CliRunner().invoke(cli, ["--recipes-dir", str(lab.recipes_dir), "--cache-dir", str(lab.cache_dir),
                                   "cache", "gc", "--release", "nope"], obj=None)
    assert res.exit_code != 0 and "nope" in str(res.exception)
    assert getattr(res.exception, "exit_code", None) == 2
    assert (lab.cache_dir / "work" / "a-999999999999").exists()


def _wheelhouse_built_from(root: Path, commit: str, extra_sha: str) -> Path:
    """A wheelhouse whose one wheel was built from a git commit and an extra source archive (the key
    inputs its manifest entry records), and a lock naming it."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"format": 1, "wheels": {
        "x-1.0-py3-none-any.whl": {"component": "x", "dist": "x", "version": "1.0", "sha256": "0" * 64, "size": 1,
                                   "inputs": {"source": {"git_commit": commit, "submodules": True},
                                              "extra_sources": {"dep": {"archive_sha256": extra_sha}}}},
        "y-1.0-py3-none-any.whl": {"component": None, "dist": "y", "version": "1.0", "sha256": "1" * 64,
                                   "size": 1}}}))
    (root / "locks").mkdir()
    (root / "locks" / "mine.json").write_text(json.dumps({"format": 1, "packages": [
        {"name": "x", "version": "1.0", "filename": "x-1.0-py3-none-any.whl", "sha256": "0" * 64,
         "component": "x", "origin": "built"}]}))
    return root


def test_gc_keeps_what_the_wheelhouse_was_built_from_though_no_known_release_plans_it(lab):
    # a release given by path, built yesterday, then forgotten by gc: its sources must stay
    _wheelhouse_built_from(lab.wheelhouse_dir, OLD_COMMIT, STALE_SHA)
    res = _cli(lab, "cache", "gc")
    assert res.exit_code == 0, res.output
    trees = lab.cache_dir / "sources" / "trees"
    assert (trees / f"git-{OLD_COMMIT}").exists() and (trees / f"sha256-{STALE_SHA}").exists()
    assert (lab.cache_dir / "sources" / "archives" / f"{STALE_SHA}-z.tar.gz").exists()
    assert "and the 2 the wheels of" in res.output


@pytest.mark.parametrize("given", ["dir", "manifest", "lock"])
def test_gc_keeps_what_a_wheelhouse_or_lock_it_is_given_was_built_from(lab, tmp_path, given):
    other = _wheelhouse_built_from(tmp_path / "elsewhere", OLD_COMMIT, STALE_SHA)
    path = {"dir": other, "manifest": other / "manifest.json", "lock": other / "locks" / "mine.json"}[given]
    res = _cli(lab, "cache", "gc", "--keep-built-from", str(path))
    assert res.exit_code == 0, res.output
    assert (lab.cache_dir / "sources" / "trees" / f"git-{OLD_COMMIT}").exists()
    res = _cli(lab, "cache", "gc")  # without it: no longer kept
    assert not (lab.cache_dir / "sources" / "trees" / f"git-{OLD_COMMIT}").exists()


def test_gc_keep_built_from_a_file_that_is_none_of_them_is_bad_input(lab, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    res = CliRunner().invoke(cli, ["--recipes-dir", str(lab.recipes_dir), "--cache-dir", str(lab.cache_dir),
                                   "cache", "gc", "--keep-built-from", str(tmp_path / "notes.txt")])
    assert getattr(res.exception, "exit_code", None) == 2 and "--keep-built-from" in str(res.exception)
    assert (lab.cache_dir / "sources" / "trees" / f"git-{OLD_COMMIT}").exists()
