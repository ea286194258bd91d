"""`wheelfactory cache`: what the build cache holds, and garbage collection of what no build needs.

    <cache>/
      work/<component>-<key12>/     a step's work tree (kept by --keep-work, --until or a failed build)
      work/<component>-<key12>.lock its per-key lock: held by the build that uses the tree
      work/.trash-<pid>-*           trees moved aside by fresh_dir, deleted once their process is gone
      staged/<key12>/               built wheels between the build and the publish (or a publish that
                                    gave up: the next run publishes them; after gc it builds again)
      sources/trees/, archives/     sources by content (fetch.py); resolved.json names them
      pydeps/, adopt/, logs/, toolkits/, ccache/, uv/, timings.json

`gc` removes work trees, staged copies, superseded attic entries of the wheelhouse and the
sources no known release uses; `--dry-run` only says what would go. It never waits for anything
and never removes what is in use:

- a work tree is removed only while gc holds its per-key lock (taken without waiting); a tree
  whose lock a build holds is skipped with a message, and so is a staged copy of that key;
- attic entries are removed only under the wheelhouse lock (taken without waiting), and only
  those whose slot (distribution, public version, tags) the manifest fills with another wheel:
  a quarantined wheel not built again yet may be the only copy, and stays. Published wheels,
  the manifest, the index and the locks are never touched;
- sources are kept when any release known here (the shipped ones, --recipes-dir's, and every
  `--release` given) plans them, by the commit or sha256 recorded for them on any index, and when
  a wheel of the wheelhouse (or of a wheelhouse, manifest or lock given with --keep-built-from)
  was built from them, as its manifest entry's key inputs say: a release given by path and built
  yesterday keeps its sources, so `build --offline` still works. A release that cannot be planned,
  or a build or fetch in progress, leaves every source alone.
  Lock files stay: removing one a waiting process has open would let two processes hold "it".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..core.cachelayout import CacheLayout
from ..core.errors import InputError, LockedError
from ..core.interrupt import pid_alive, try_lock
from ..store.wheelhouse import Wheelhouse

# attic/<time>-<name> (or <time>.<n>-<name> within one second): a second copy of one name
_STAMPED = re.compile(r"^\d{8}T\d{6}(\.\d+)?-(?P<name>.+\.whl)$")
_TEMP_AGE_S = 3600  # a .fetch-*/.dl-* younger than this may belong to a download in progress


def fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def tree_size(path: Path) -> int:
    """Bytes under path (files as stored, links not followed); 0 for what vanished meanwhile."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return st.st_size
    total = 0
    for top, dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def busy(path: Path) -> bool:
    """Whether another process holds the lock file at path now."""
    with try_lock(path) as held:
        return not held


@dataclass(frozen=True)
class Item:
    """One thing gc removes (or would), with why."""

    kind: str  # work, trash, staged, attic, source-tree, archive, temp
    path: Path
    size: int
    why: str
    locks: tuple[Path, ...] = ()  # held (without waiting) while it is removed


@dataclass
class GcPlan:
    remove: list[Item] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what stays although gc would take it, and why

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.remove)


# -- the cache's areas ---------------------------------------------------------------------------

class CacheStore:
    def __init__(self, cache_dir: Path, wheelhouse: Wheelhouse):
        self.root = cache_dir
        self.layout = CacheLayout(cache_dir)
        self.work = self.layout.work
        self.staged = self.layout.staged
        self.trees = self.layout.source_trees
        self.archives = self.layout.source_archives
        self.wheelhouse = wheelhouse

    def usage(self) -> list[tuple[str, Path, int, int]]:
        """(label, directory, entries, bytes) per area, then everything else under the cache."""
        rows = []
        known = set()
        for d, label in self.layout.areas():
            known.add(d)
            entries = [p for p in d.iterdir() if not p.name.endswith(".lock")] if d.is_dir() else []
            rows.append((label, d, len(entries), sum(tree_size(p) for p in entries)))
        sources = self.layout.sources
        known |= {sources}
        other = [p for p in (self.root.iterdir() if self.root.is_dir() else ()) if p not in known]
        other += [p for p in (sources.iterdir() if sources.is_dir() else ()) if p not in known]
        rows.append(("other", self.root, len(other), sum(tree_size(p) for p in other)))
        return rows

    def work_trees(self) -> list[tuple[Path, Path]]:
        """(work tree, its lock file) for every step's work directory."""
        if not self.work.is_dir():
            return []
        return [(p, self.work / f"{p.name}.lock") for p in sorted(self.work.iterdir())
                if p.is_dir() and not p.name.startswith(".")]

    def key_locks(self, key12: str) -> list[Path]:
        """The per-key lock files of a 12-hex key prefix (one per component that has the key)."""
        return sorted(self.work.glob(f"*-{key12}.lock")) if self.work.is_dir() else []

    def any_build_running(self) -> str | None:
        """The lock of a build or fetch in progress (per-key or per-source-tree), or None."""
        for d in (self.work, self.trees):
            for lock in sorted(d.glob("*.lock")) if d.is_dir() else ():
                if busy(lock):
                    return str(lock)
        return None

    # -- attic ------------------------------------------------------------------------------------

    def attic_entries(self) -> list[tuple[Path, bool]]:
        """(attic file, superseded) for every wheel in the wheelhouse's attic/: superseded when the
        manifest holds another wheel of the same distribution, public version and tags."""
        attic = self.wheelhouse.root / "attic"
        if not attic.is_dir():
            return []
        slots = set()
        for entry in self.wheelhouse.manifest().values():
            with contextlib.suppress(InvalidVersion, KeyError, TypeError):
                slots.add((canonicalize_name(entry["dist"]), Version(entry["version"]).public,
                           frozenset(entry.get("tags", []))))
        out = []
        for p in sorted(attic.iterdir()):
            # a wheel that was a symbolic link goes to attic/ as the link (wheelhouse.py): it is
            # judged by its name like a file, even when its target is gone
            if not (p.is_file() or p.is_symlink()):
                continue
            m = _STAMPED.match(p.name)
            try:
                name, version, _, tags = parse_wheel_filename(m["name"] if m else p.name)
            except (InvalidWheelFilename, InvalidVersion):
                out.append((p, False))
                continue
            out.append((p, (name, version.public, frozenset(str(t) for t in tags)) in slots))
        return out

    # -- gc -----------------------------------------------------------------------------------------

    def plan_gc(self, keep_sources: set[str] | None, sources_note: str | None = None) -> GcPlan:
        """What gc would remove now. keep_sources: the commits and sha256s some release uses (None:
        leave sources alone, sources_note saying why)."""
        plan = GcPlan()
        for tree, lock in self.work_trees():
            if busy(lock):
                plan.skipped.append(f"{tree}: in use by a running build ({_holder(lock)}); kept")
            else:
                plan.remove.append(Item("work", tree, tree_size(tree), "work tree", (lock,)))
        for area in (self.work, self.staged):
            for trash in sorted(area.glob(".trash-*")) if area.is_dir() else ():
                pid = trash.name.split("-")[1]
                if pid.isdigit() and not pid_alive(int(pid)):
                    plan.remove.append(Item("trash", trash, tree_size(trash), "left by a process that is gone"))
        for staged in sorted(self.staged.iterdir()) if self.staged.is_dir() else ():
            if staged.name.startswith("."):
                continue
            locks = tuple(self.key_locks(staged.name))
            if any(busy(lock) for lock in locks):
                plan.skipped.append(f"{staged}: its build is running; kept")
            else:
                plan.remove.append(Item("staged", staged, tree_size(staged), "staged copy not published", locks))
        try:
            attic = self.attic_entries()
        except Exception as e:  # noqa: BLE001 -- a manifest gc cannot read: leave the attic alone
            plan.skipped.append(f"{self.wheelhouse.root / 'attic'}: left alone ({e})")
            attic = []
        for path, superseded in attic:
            if superseded:
                plan.remove.append(Item("attic", path, path.lstat().st_size,
                                        "superseded: the manifest holds a newer build of it"))
        # A build-requirements download killed before it moved its files (pydeps.py); an hour
        # old, so not one in progress.
        for temp in sorted(self.layout.pydeps.glob(".download-*")):
            if _older_than(temp, _TEMP_AGE_S):
                plan.remove.append(Item("temp", temp, tree_size(temp), "left by an interrupted download"))
        if keep_sources is None:
            if sources_note:
                plan.skipped.append(f"{self.layout.sources}: left alone ({sources_note})")
            return plan
        running = self.any_build_running()
        if running:
            plan.skipped.append(f"{self.root / 'sources'}: left alone (a build or fetch is running: {running})")
            return plan
        for tree in sorted(self.trees.iterdir()) if self.trees.is_dir() else ():
            if tree.name.startswith(".fetch-"):
                if _older_than(tree, _TEMP_AGE_S):
                    plan.remove.append(Item("temp", tree, tree_size(tree), "left by an interrupted fetch"))
                continue
            if tree.name.startswith(".") or not tree.is_dir():
                continue
            if _tree_content(tree.name) not in keep_sources:
                plan.remove.append(Item("source-tree", tree, tree_size(tree), "no known release uses it",
                                        (self.trees / f".{tree.name}.lock",)))
        for archive in sorted(self.archives.iterdir()) if self.archives.is_dir() else ():
            if archive.name.startswith(".dl-"):
                if _older_than(archive, _TEMP_AGE_S):
                    plan.remove.append(Item("temp", archive, tree_size(archive), "left by an interrupted download"))
                continue
            if archive.name.split("-", 1)[0] not in keep_sources:
                plan.remove.append(Item("archive", archive, tree_size(archive), "no known release uses it"))
        return plan

    def run_gc(self, plan: GcPlan, echo: Callable[[str], None]) -> int:
        """Remove what the plan lists, each under its locks taken again without waiting (a build
        that started since is left alone); attic entries under the wheelhouse lock. Returns the
        bytes freed."""
        freed = 0
        attic = [i for i in plan.remove if i.kind == "attic"]
        for item in (i for i in plan.remove if i.kind != "attic"):
            with contextlib.ExitStack() as stack:
                if not all(stack.enter_context(try_lock(lock)) for lock in item.locks):
                    echo(f"kept {item.path}: a build started using it")
                    continue
                if item.kind == "source-tree" and (running := self.any_build_running()):
                    echo(f"kept {item.path}: a build or fetch started ({running})")
                    continue
                if _remove(item.path):
                    freed += item.size
        if attic:
            try:
                with self.wheelhouse.lock(timeout=0):
                    still = {p for p, superseded in self.attic_entries() if superseded}
                    for item in attic:
                        if item.path in still and _remove(item.path):
                            freed += item.size
            except LockedError:
                echo(f"kept {self.wheelhouse.root / 'attic'}: another wheelfactory process holds the wheelhouse "
                     "lock; run gc again when it is done")
        return freed


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError):
        return lock.read_text().strip() or "another process"
    return "another process"


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > seconds
    except FileNotFoundError:
        return False


def _tree_content(name: str) -> str:
    """The commit or sha256 a source tree is named by: git-<commit>[-nosub] or sha256-<sha256>."""
    return name.removeprefix("git-").removeprefix("sha256-").removesuffix("-nosub")


def _remove(path: Path) -> bool:
    """Rename aside, then delete: a reader never sees half a tree under the real name."""
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_dir() and not path.is_symlink():
        aside = path.parent / f".gc-{os.getpid()}-{time.time_ns()}-{path.name}"
        os.replace(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        path.unlink()
    return True


# -- which sources a wheelhouse was built from ----------------------------------------------------

def _contents(identity: object) -> set[str]:
    """The commit or sha256 a key input's source identity names (a local tree's digest is not cached)."""
    if not isinstance(identity, dict):
        return set()
    return {v for k in ("git_commit", "archive_sha256") if isinstance(v := identity.get(k), str) and v}


def built_from(manifest: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The commits and sha256s of the sources (and extra sources) a wheelhouse's wheels were built
    from, as their manifest entries' key inputs record them."""
    keep: set[str] = set()
    for entry in manifest.values():
        inputs = entry.get("inputs") if isinstance(entry, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        keep |= _contents(inputs.get("source"))
        extra = inputs.get("extra_sources")
        for identity in extra.values() if isinstance(extra, Mapping) else ():
            keep |= _contents(identity)
    return keep


def kept_by(path: Path) -> set[str]:
    """What gc keeps for `--keep-built-from PATH`: the sources of the wheels of a wheelhouse (its
    directory or manifest.json) or of a lock file in it (locks/<release>.json: only its wheels).
    InputError naming the file for anything else."""
    path = path.expanduser()
    if path.is_dir():
        path = path / "manifest.json"
    lock = path.parent.name == "locks" and path.suffix == ".json"
    manifest_path = path.parent.parent / "manifest.json" if lock else path
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))["wheels"]
        files = {p["filename"] for p in json.loads(path.read_text(encoding="utf-8"))["packages"]} if lock else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"--keep-built-from {path}: not a wheelhouse, its manifest.json or a lock file in its locks/ "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"--keep-built-from {manifest_path}: its 'wheels' is not a table of wheels")
    return built_from({f: e for f, e in manifest.items() if files is None or f in files})
