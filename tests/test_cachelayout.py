"""One CacheLayout names every directory under --cache-dir; the modules that use a directory take
it from there, and the four build-keyed modules that still spell theirs agree with it."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from wheelfactory.core.cachelayout import CacheLayout
from wheelfactory.pipeline.cachestore import CacheStore
from wheelfactory.pipeline.factory import Factory
from wheelfactory.pipeline.stepbuild import work_dir
from wheelfactory.planning.configurefirst import check_dir
from wheelfactory.run.progress import Timings
from wheelfactory.sources.cargo import vendor_root
from wheelfactory.sources.fetch import SourceCache
from wheelfactory.store.wheelhouse import Wheelhouse
from wheelfactory.toolchain.ccache import ccache_env, tools_dir
from wheelfactory.toolchain.installer import uv_cache_dir
from wheelfactory.toolchain.pydeps import pydeps_dir
from wheelfactory.toolchain.toolkit import toolkits_dir

from .conftest import RECIPES, REPO, SPARK

KEY = "0123456789abcdef" * 4


def test_the_layout_spells_each_directory_as_the_cache_has_always_held_it(tmp_path):
    c = CacheLayout(tmp_path)
    assert {name: getattr(c, name).relative_to(tmp_path).as_posix() for name in (
        "sources", "source_archives", "source_trees", "source_records", "pydeps", "work", "staged", "adopt",
        "ccache", "ccache_tools", "logs", "timings")} == {
        "sources": "sources", "source_archives": "sources/archives", "source_trees": "sources/trees",
        "source_records": "sources/resolved.json", "pydeps": "pydeps", "work": "work", "staged": "staged",
        "adopt": "adopt", "ccache": "ccache", "ccache_tools": "tools/ccache", "logs": "logs",
        "timings": "timings.json"}
    assert c.work_tree("vllm", KEY) == tmp_path / "work" / "vllm-0123456789ab"
    assert c.staged_step(KEY) == tmp_path / "staged" / "0123456789ab"
    assert c.adopted(KEY) == tmp_path / "adopt" / "0123456789ab"
    assert c.installed("torch") == tmp_path / "adopt" / "installed" / "torch"
    assert c.configure_check("0.33.0-t5") == tmp_path / "configure-check" / "0.33.0-t5"
    assert c.cargo_vendor("ab" * 32) == tmp_path / "sources" / "cargo" / f"sha256-{'ab' * 32}"
    assert c.log("lock-0.33.0-t5") == tmp_path / "logs" / "lock-0.33.0-t5.log"


def test_toolkits_and_uv_may_be_shared_between_caches(tmp_path, monkeypatch):
    monkeypatch.delenv("WHEELFACTORY_TOOLKITS_DIR", raising=False)
    monkeypatch.delenv("WHEELFACTORY_UV_CACHE_DIR", raising=False)
    c = CacheLayout(tmp_path / "c")
    assert (c.toolkits, c.uv) == (tmp_path / "c" / "toolkits", tmp_path / "c" / "uv")
    monkeypatch.setenv("WHEELFACTORY_TOOLKITS_DIR", str(tmp_path / "shared-tk"))
    monkeypatch.setenv("WHEELFACTORY_UV_CACHE_DIR", str(tmp_path / "shared-uv"))
    assert (c.toolkits, c.uv) == (tmp_path / "shared-tk", tmp_path / "shared-uv")


@pytest.mark.parametrize("shared", [False, True])
def test_every_module_that_names_a_cache_directory_agrees_with_the_layout(tmp_path, monkeypatch, shared):
    for var in ("WHEELFACTORY_TOOLKITS_DIR", "WHEELFACTORY_UV_CACHE_DIR"):
        if shared:
            monkeypatch.setenv(var, str(tmp_path / var))
        else:
            monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    c = CacheLayout(cache)
    step = SimpleNamespace(component="nccl", key=KEY)
    # the build-keyed modules (stepbuild, pydeps, installer, cargo) spell their own
    assert work_dir(cache, step) == c.work_tree("nccl", KEY)
    assert pydeps_dir(cache, "https://pypi.org/simple").parent == c.pydeps
    assert uv_cache_dir(cache) == c.uv
    assert vendor_root(cache, "ab" * 32) == c.cargo_vendor("ab" * 32)
    # the others read the layout
    assert toolkits_dir(cache) == c.toolkits
    assert tools_dir(cache) == c.ccache_tools and ccache_env(cache)["CCACHE_DIR"] == str(c.ccache)
    sources = SourceCache(cache)
    assert (sources.root, sources.archives, sources.trees, sources.records.path) == (
        c.sources, c.source_archives, c.source_trees, c.source_records)
    assert check_dir(cache, "r") == c.configure_check("r")
    assert Timings(cache).path == c.timings
    store = CacheStore(cache, Wheelhouse(tmp_path / "wh"))
    assert (store.work, store.staged, store.trees, store.archives) == (c.work, c.staged, c.source_trees,
                                                                       c.source_archives)
    assert Factory(RECIPES, tmp_path / "wh", cache, host_probe=lambda: SPARK).cache == c


def test_cache_list_shows_the_areas_in_their_order(tmp_path):
    store = CacheStore(tmp_path, Wheelhouse(tmp_path / "wh"))
    (tmp_path / "work" / "x").mkdir(parents=True)
    (tmp_path / "work" / "x" / "f").write_bytes(b"12345")
    rows = store.usage()
    assert [label for label, *_ in rows] == [
        "work trees", "staged copies", "source trees", "source archives", "build requirements (pydeps)",
        "adopted wheels", "CUDA toolkits", "ccache", "uv cache", "logs", "other"]
    assert rows[0][2:] == (1, 5)


# A cache directory spelled as a path join on the cache root, outside the layout: allowed only in
# the modules whose code enters build keys (see cachelayout.py's docstring), each for its own.
SPELLED = re.compile(r"""cache(?:_dir)?\s*/\s*["']""")
KEYED_SPELLINGS = {"wheelfactory/pipeline/stepbuild.py": 2, "wheelfactory/toolchain/pydeps.py": 1,
                   "wheelfactory/toolchain/installer.py": 1, "wheelfactory/sources/cargo.py": 1}


def test_no_other_module_spells_a_cache_directory():
    found = {}
    for path in sorted((REPO / "wheelfactory").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel == "wheelfactory/core/cachelayout.py":
            continue
        if n := len(SPELLED.findall(path.read_text())):
            found[rel] = n
    assert found == KEYED_SPELLINGS


def test_the_spelling_check_sees_a_join_on_the_cache_root():
    assert SPELLED.findall('x = cache_dir / "logs" / "a.log"\ny = self.cache / \'work\'\n') == [
        'cache_dir / "', "cache / '"]
    assert not SPELLED.findall('x = CacheLayout(cache_dir).logs\ny = Path(cache_dir)\n')


def test_the_layout_is_one_place_for_the_whole_tree_of_names():
    # every top-level name the layout hands out, and nothing else under the cache root
    c = CacheLayout(Path("/c"))
    tops = {p.relative_to("/c").parts[0] for p in (
        c.sources, c.pydeps, c.work, c.staged, c.adopt, c.ccache, c.ccache_tools, c.logs, c.timings,
        c.configure_check("r"), *(d for d, _ in c.areas()))}
    assert tops == {"sources", "pydeps", "work", "staged", "adopt", "ccache", "tools", "logs", "timings.json",
                    "configure-check", "toolkits", "uv"}
