"""Fetching sources into the source cache as ready-to-copy trees, verified and safely extracted.

    <cache>/sources/resolved.json  what each tag, branch and sdist resolved to (resolve.py)
    <cache>/sources/archives/      downloaded archives, named by their sha256
    <cache>/sources/trees/         one unpacked tree per content: git-<commit>, sha256-<archive sha256>

Trees are named by content, never by a source's name, so a moved tag or another index's sdist
can only ever land in another directory. A tree appears under its final name only when complete
(built in a temporary sibling, then renamed), so an interrupted fetch is simply fetched again.
With offline=True nothing is downloaded: a missing tree or record is an error telling the user
to run `wheelfactory fetch`.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError
from ..core.interrupt import file_lock
from ..run.runner import Runner
from ..store.wheelmeta import sha256_file
from .download import download_checked
from .kinds import Source
from .resolve import SourceRecords
from .transport import check_url

DEFAULT_INDEX = "https://pypi.org/simple"
MARKER = ".wf-source.json"


class SourceCache:
    def __init__(self, cache_dir: Path, index_url: str = DEFAULT_INDEX):
        layout = CacheLayout(cache_dir)
        self.root = layout.sources
        self.archives = layout.source_archives
        self.trees = layout.source_trees
        self.index_url = index_url.rstrip("/")
        self.records = SourceRecords(layout.source_records)

    # -- what a source is (no network) ----------------------------------------------------------

    def recorded(self, source: Source) -> str | None:
        """The content a source names, known without the network: a commit or sha256 given in the
        declaration, else the one recorded at fetch; None while unresolved."""
        if (pinned := source.pinned()) is not None:
            return pinned
        key = source.record_key(self.index_url)
        entry = self.records.get(key) if key is not None else None
        return source.content_of(entry) if entry is not None else None

    def tree_path(self, source: Source, content: str) -> Path:
        """Where the unpacked tree of a source's content lives (a local directory is used in place)."""
        return source.tree_in(self.trees, content)

    # -- resolving names to content (network) ---------------------------------------------------

    def resolve(self, source: Source, runner: Runner, *, refresh: bool = False,
                accept_moved: bool = False) -> str | None:
        """Record the content a source's name stands for now. Without refresh, a recorded source is
        left as it is (build); with refresh (fetch) tags and sdists are checked again, a change is a
        BuildError naming both (unless accept_moved), and a followed branch moves on. Returns a line
        saying what changed, or None."""
        key = source.record_key(self.index_url)
        if key is None or source.pinned() is not None:
            return None  # a local directory, or content the declaration names itself
        old = self.records.get(key)
        if old is not None and source.RECORDED_ONCE:
            return None  # an archive without a published sha256 is recorded by its first download, once
        if old is not None and not refresh and self.recorded(source) is not None:
            return None
        entry, new, what = source.ask(self, runner)
        before = old and (old.get("commit") or old.get("sha256"))
        if before == new:
            return None
        if before and entry.get("kind") != "branch" and not accept_moved:
            # The record stays: the key stays that of what was built until the user says otherwise.
            keep = source.moved_hint(before)
            raise BuildError(f"{what} changed since it was recorded on {old.get('recorded', '?')}: was {before}, "
                             f"is now {new}. If the new content is what you want, run the fetch again with "
                             f"--accept-moved-tags (builds from it get new keys){keep}")
        self.records.put(key, entry)
        if not before:
            return None
        return f"{what} moved{'' if entry.get('kind') == 'branch' else ' (accepted)'}: {before} -> {new}"

    # -- trees ----------------------------------------------------------------------------------

    def fetch(self, source: Source, runner: Runner, *, offline: bool = False) -> Path:
        """The source's tree, resolving and fetching it first if needed."""
        if (here := source.in_place()) is not None:
            return here
        content = self.recorded(source)
        if content is None:
            if offline:
                raise BuildError(f"source {source.describe()} was never resolved to a commit or sha256 (nothing in "
                                 f"{self.records.path}) and --offline forbids asking; run `wheelfactory fetch "
                                 "--release ...` while online first")
            self.resolve(source, runner)
            content = self.recorded(source)
            assert content is not None
        tree = self.tree_path(source, content)
        if (tree / MARKER).exists():
            return tree
        if offline:
            raise BuildError(f"source {source.describe()} is not in the cache {self.root} and --offline forbids "
                             "downloading; run `wheelfactory fetch --release ...` while online first")
        self.trees.mkdir(parents=True, exist_ok=True)
        # One process at a time per tree: a second `fetch` or build of the same source waits, then
        # finds the tree the first one made (os.replace onto a finished tree would fail).
        with file_lock(self.trees / f".{tree.name}.lock", on_wait=lambda holder: runner.note(
                f"waiting for another process fetching {source.describe()} ({holder})")):
            if (tree / MARKER).exists():
                return tree
            tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.trees))
            try:
                top, info = source.fetch_into(self, content, tmp, runner)
                (top / MARKER).write_text(json.dumps({"source": source.describe()} | info, indent=2) + "\n")
                os.replace(top, tree)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return tree

    # -- what the kinds share ---------------------------------------------------------------------

    def download(self, url: str, sha256: str | None, allow_insecure: bool = False) -> Path:
        """Download to archives/, verifying sha256 when given; reuse a verified copy."""
        url = check_url(url, allow_insecure, f"archive {url}", "set allow_insecure = true in its source table")
        self.archives.mkdir(parents=True, exist_ok=True)
        name = url.rsplit("/", 1)[-1].split("#")[0].split("?")[0] or "archive"
        if sha256:
            cached = self.archives / f"{sha256}-{name}"
            if cached.exists() and sha256_file(cached) == sha256:
                return cached
        return download_checked(url, self.archives, name, sha256, allow_insecure=allow_insecure)

    def unpack(self, archive: Path, dest: Path) -> Path:
        """An archive extracted safely into dest (extract_archive); its single top directory."""
        return extract_archive(archive, dest)


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a tar or zip safely into dest; return the single top directory if there is one.

    Tar members go through tarfile's 'data' filter (no absolute paths, no escaping '..', no
    links out of the tree, no device files); zip members are checked the same way.
    """
    dest.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for member in zf.namelist():
                target = (dest / member).resolve()
                if target != root and root not in target.parents:
                    raise BuildError(f"{archive}: member {member!r} would be written outside the tree; refusing")
            try:
                zf.extractall(dest)
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                # e.g. a symlink entry (written as a file) with members under it: NotADirectoryError
                raise BuildError(f"{archive}: refusing to extract: {e}") from None
    else:
        try:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:
                    tf.extractall(dest, members=checked_tar_members(tf, dest, archive))
        except (tarfile.TarError, OSError) as e:
            raise BuildError(f"{archive}: refusing to extract: {e}") from None
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def checked_tar_members(tf: tarfile.TarFile, dest: Path, archive: Path) -> list[tarfile.TarInfo]:
    """The 'data' filter's rules, for Pythons without it (3.11 before 3.11.4: Debian 12's 3.11.2, the
    Python of its arm64 machines): leading slashes dropped, nothing written or linked outside the
    tree, only regular files, directories and links, no set-id bits or group/other write."""
    root = dest.resolve()

    def inside(path: Path) -> bool:
        return path == root or root in path.parents

    def refuse(why: str) -> BuildError:
        return BuildError(f"{archive}: refusing to extract: {why}")

    members = []
    for m in tf.getmembers():
        m.name = m.name.lstrip("/")
        target = (dest / m.name).resolve()
        if not inside(target):
            raise refuse(f"member {m.name!r} would be written outside the tree")
        if m.issym() and (m.linkname.startswith("/") or not inside((target.parent / m.linkname).resolve())):
            raise refuse(f"symbolic link {m.name!r} -> {m.linkname!r} leads outside the tree")
        if m.islnk() and not inside((dest / m.linkname.lstrip("/")).resolve()):
            raise refuse(f"hard link {m.name!r} -> {m.linkname!r} leads outside the tree")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise refuse(f"member {m.name!r} is a device or FIFO")
        m.mode &= 0o755
        members.append(m)
    return members
