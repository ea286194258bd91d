"""The wheelhouse: a flat directory of wheels, a PEP 503 simple index, a manifest and a lock.

    wheelhouse/
      *.whl              pip install --find-links wheelhouse/
      simple/            pip install --index-url file://.../wheelhouse/simple/  (and uv)
      manifest.json      per wheel: component, version, build key, sha256, size, key inputs, log
      locks/             per-release lock files (see lock/closure.py)
      attic/             wheels replaced by a newer build of the same version, kept, not indexed

Publishing is atomic: a wheel is verified, copied next to its final place under a temporary
name and renamed; the manifest and index are rewritten the same way. A failed or interrupted
build never leaves a partial or wrong wheel visible. One process at a time writes (flock).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..core.errors import BuildError, InputError
from ..core.interrupt import deferred_signals, file_lock, shared_lock, try_lock
from .pep658 import index_attributes, write_metadata_files
from .wheelmeta import WheelInfo, sha256_file, verify_wheel

MANIFEST_FORMAT = 1
# What every manifest entry has (publish and add_entries write them; list, index and checks read them).
ENTRY_KEYS = ("dist", "version", "sha256", "size")



def plain_wheel_name(name: object) -> str | None:
    """Why `name` is not a plain wheel file name of the wheelhouse's top directory (None when it is).
    Manifest entries, lock entries and attic names are joined to the wheelhouse path: a name with a
    separator, a `..`, a NUL or a leading dot would reach a file outside it (or a hidden one)."""
    if not isinstance(name, str) or not name:
        return "not a file name"
    if "/" in name or "\\" in name or "\0" in name or name.startswith(".") or any(ord(c) < 32 for c in name):
        return "not a plain file name (a path separator, a leading dot or a control character)"
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename as e:
        return f"not a wheel file name ({e})"
    return None


def check_wheel_name(name: object, where: str, fix: str) -> str:
    """`name` when it is a plain wheel file name, else InputError (exit 2) naming `where` and the entry."""
    why = plain_wheel_name(name)
    if why is not None:
        raise InputError(f"{where}: entry {name!r} is {why}; {fix}")
    return str(name)


# Shared by processes reading the wheelhouse's files, taken exclusively to move wheels out.
READERS_LOCK = ".readers.lock"

# In simple/: the sha256 of the manifest the index was written from (served files skip dotfiles).
INDEX_STAMP = ".manifest-sha256"


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

@dataclass(frozen=True)
class Mismatch:
    """A published wheel that is not the file its manifest entry recorded."""

    name: str
    recorded: str  # the manifest's sha256
    actual: str  # the file's sha256, or "missing"

    def describe(self) -> str:
        if self.actual == "missing":
            return f"{self.name}: in the manifest, missing from the wheelhouse"
        if self.actual == "symlink":
            return f"{self.name}: a symbolic link, not a file of the wheelhouse (not followed)"
        return f"{self.name}: sha256 {self.actual}, the manifest recorded {self.recorded}"


def current_umask() -> int:
    """The process umask (read by setting it and setting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path: Path, mode: int = 0o666) -> None:
    """Give a file (0666) or directory (0777) made by mkstemp/mkdtemp (always 0600/0700) the mode
    open()/mkdir() would have given it: the wheelhouse is meant to be read by other users and
    served by a web server, and the user's umask still decides (022 gives 0644/0755)."""
    os.chmod(path, mode & ~current_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename (with the mode open() would give)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        shareable(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Wheelhouse:
    def __init__(self, root: Path):
        self.root = root
        self.manifest_path = root / "manifest.json"
        self.simple = root / "simple"
        self.locks_dir = root / "locks"
        self._wait: float | None = None  # the --wait of the write lock held now

    # -- reading -------------------------------------------------------------------------------

    def manifest(self) -> dict[str, dict[str, Any]]:
        """filename -> entry, for every wheel the wheelhouse holds."""
        self.check_root()
        if not self.manifest_path.exists():
            return {}
        fix = "restore it or remove the wheelhouse to start over"
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{self.manifest_path}: corrupt manifest ({e}); {fix}") from None
        # Anything else than what _write_manifest writes is refused here, with the file named,
        # instead of a KeyError or AttributeError wherever an entry is first read.
        wheels = data.get("wheels", {}) if isinstance(data, dict) else None
        if not isinstance(wheels, dict):
            raise InputError(f"{self.manifest_path}: not a wheelfactory manifest (expected an object with a "
                             f"\"wheels\" object); {fix}")
        for name, entry in wheels.items():
            missing = [k for k in ENTRY_KEYS if k not in entry] if isinstance(entry, dict) else list(ENTRY_KEYS)
            if missing:
                raise InputError(f"{self.manifest_path}: entry {name!r} lacks {', '.join(missing)}; {fix}")
            # Before any file operation: an entry named "../x.whl" must never move or read a file
            # outside the wheelhouse (rebuild's attic, verify, list, the index).
            check_wheel_name(name, f"{self.manifest_path}: corrupt manifest", fix)
        return wheels

    def check_root(self) -> None:
        """InputError unless the wheelhouse path is a directory or absent (made on first write)."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--wheelhouse {self.root} is a file, not a directory; pass a directory")

    def check_file(self, name: str, entry: Mapping[str, Any], full: bool = False) -> Mismatch | None:
        """Whether a published wheel is still the file the manifest recorded. Fast path: size and
        mtime as recorded at publish; a full sha256 when they differ, none was recorded, or `full`.
        Returns None when it matches, else what is wrong (a missing file has actual "missing")."""
        path = self.root / name
        if path.is_symlink():  # a link could point anywhere: never read through it
            return Mismatch(name, entry.get("sha256", "?"), "symlink")
        try:
            st = path.stat()
        except FileNotFoundError:
            return Mismatch(name, entry.get("sha256", "?"), "missing")
        if not full and st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns"):
            return None
        actual = sha256_file(path)
        return None if actual == entry.get("sha256") else Mismatch(name, entry.get("sha256", "?"), actual)

    def mismatches(self, key: str, full: bool = False) -> list[Mismatch]:
        """The wheels of a build key that are not what the manifest recorded."""
        return [m for name, e in sorted(self.manifest().items()) if e.get("key") == key
                if (m := self.check_file(name, e, full)) is not None]

    def files_for_key(self, key: str, verify: bool = False) -> list[Path] | None:
        """The published wheels of a build key, or None unless all are present and match the
        manifest (size+mtime, or sha256 when those differ or with verify)."""
        entries = {name: e for name, e in self.manifest().items() if e.get("key") == key}
        if not entries or any(self.check_file(n, e, verify) for n, e in entries.items()):
            return None
        return [self.root / name for name in entries]

    def is_cached(self, key: str, verify: bool = False) -> bool:
        return self.files_for_key(key, verify) is not None

    def cached_keys(self) -> set[str]:
        """Keys whose wheels are all present and match the manifest (read once; used by the planner)."""
        by_key: dict[str, bool] = {}
        for name, e in self.manifest().items():
            k = e.get("key")
            if k:
                by_key[k] = by_key.get(k, True) and self.check_file(name, e) is None
        return {k for k, ok in by_key.items() if ok}

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the wheelhouse's write lock (publishing, locking, verifying: seconds, never a whole
        build). A waiting process hears who holds it (on_wait, then once a minute); after
        `timeout` seconds it gives up with exit 3."""
        self.check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            open(self.root / ".lock", "a").close()  # noqa: SIM115 -- only proves the wheelhouse is writable
        except OSError as e:  # read-only file system, no permission, an immutable directory
            raise InputError(f"cannot write to the wheelhouse {self.root}: {e.strerror}; pass a --wheelhouse "
                             "this user can write") from None
        with file_lock(self.root / ".lock", on_wait, timeout=timeout, what=f"the wheelhouse lock {self.root}/.lock"):
            self._wait = timeout  # a publish waits for readers as long as it waited for the lock
            yield

    @contextlib.contextmanager
    def reading(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the wheelhouse's files in place while reading them (a build venv installing its
        dependency wheels, `venv` installing a lock): readers share `.readers.lock`, and a publish
        moves a wheel out (to attic/) only under it exclusively, so a concurrent `build --rebuild`
        of a dependency cannot pull a file from under a reader. The write lock (`.lock`) is not
        involved: a build still runs while another process holds it, and waits only while wheels
        are being moved. A wheelhouse not made yet, or one this user cannot write, is read unlocked."""
        if not self.root.is_dir():
            yield
            return
        try:
            open(self.root / READERS_LOCK, "a").close()  # noqa: SIM115 -- the file a publish also opens
        except OSError:  # read-only: nobody publishes into it from here
            yield
            return
        with shared_lock(self.root / READERS_LOCK, on_wait):
            yield

    @contextlib.contextmanager
    def _no_readers(self) -> Iterator[None]:
        """Wait (up to the write lock's --wait) until no process reads the wheelhouse's files, and
        keep new readers out while wheels move; caller holds the write lock."""
        with file_lock(self.root / READERS_LOCK, timeout=self._wait, record=False,
                       what=f"{self.root}: builds installing from the wheelhouse ({READERS_LOCK})"):
            yield

    def _write_manifest(self, wheels: Mapping[str, Any]) -> None:
        body = {"format": MANIFEST_FORMAT, "wheels": dict(sorted(wheels.items()))}
        atomic_write_text(self.manifest_path, json.dumps(body, indent=2, sort_keys=True) + "\n")

    def publish(self, wheels: list[Path], entry: Mapping[str, Any]) -> list[WheelInfo]:
        """Verify wheels and move them in atomically with manifest entries; caller holds the lock.

        A wheel of the same distribution, version and tags already present (an older build) is
        moved to attic/, never deleted.
        """
        infos = [verify_wheel(w) for w in wheels]  # all verified before anything is visible
        self.recover()
        manifest = self.manifest()
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            staged = []
            for info in infos:
                tmp = incoming / info.path.name
                shutil.copyfile(info.path, tmp)
                if sha256_file(tmp) != sha256_file(info.path):
                    raise BuildError(f"{info.path}: copy into the wheelhouse does not match the original")
                staged.append((info, tmp))
            # From the first wheel moved in to the index that lists it, one step: SIGINT/SIGTERM/SIGHUP
            # wait until it is done, so an interrupt never leaves a wheel the manifest does not list.
            # (SIGKILL cannot wait: recover() repairs what it leaves, at the next publish.)
            # Replacing a wheel moves the old one out: only then wait until no reader uses it.
            replaces = any(_same_slot(old, info) for info in infos for old in manifest.values())
            with self._no_readers() if replaces else contextlib.nullcontext(), deferred_signals():
                for info, tmp in staged:
                    incoming_sha = sha256_file(tmp)
                    for name, old in list(manifest.items()):
                        if _same_slot(old, info) and (name != info.path.name or old.get("key") != entry.get("key")):
                            self._to_attic(name, same_as={incoming_sha})
                            del manifest[name]
                    final = self.root / info.path.name
                    os.replace(tmp, final)
                    manifest[final.name] = dict(entry) | {
                        "dist": info.dist,
                        "version": str(info.version),
                        "tags": sorted(info.tags),
                        "sha256": sha256_file(final),
                        "size": final.stat().st_size,
                        "mtime_ns": final.stat().st_mtime_ns,  # with size: the fast check of check_file
                        "requires_python": info.requires_python,
                        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                self._write_manifest(manifest)
                self.write_index(manifest)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return infos

    def recover(self, echo: Callable[[str], None] | None = None) -> list[str]:
        """Repair what a publish killed by SIGKILL (which cannot be deferred) left behind; caller
        holds the lock, so no publish is running. Temporary .incoming-*/.simple-*/.download-* directories are
        removed, and a wheel the manifest does not list (moved in, manifest not yet written) goes
        to attic/ with a message: it was never in the index, so nothing could have used it.
        Returns the messages."""
        notes = []
        for leftover in [*self.root.glob(".incoming-*"), *self.root.glob(".simple-*"), *self.root.glob(".download-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        listed = self.manifest()
        for wheel in sorted(self.root.glob("*.whl")):
            # A directory entry of the top directory: a plain name, even when it is no wheel's.
            if wheel.name not in listed and (dest := self._move_to_attic(wheel.name)) is not None:
                notes.append(f"{wheel.name} is in the wheelhouse but not in its manifest (an interrupted "
                             f"publish); moved to {dest}")
        # Killed between writing the manifest and swapping the new index in, or in the swap itself:
        # simple/ is stale or gone. It is a pure function of the manifest, so it is written again.
        if (listed or self.simple.exists()) and self._index_stamp() != _manifest_digest(listed):
            self.write_index(listed)
            notes.append("simple/ did not match manifest.json (an interrupted publish); index written again")
        for note in notes:
            (echo or (lambda line: print(line, file=sys.stderr)))(f"wheelhouse {self.root}: {note}")
        return notes

    def _to_attic(self, name: str, same_as: Collection[str] = ()) -> Path | None:
        """Move a wheel the manifest names to attic/ (its name checked first: names are not paths)."""
        check_wheel_name(name, f"{self.root}: moving to attic/", "restore the manifest or remove the wheelhouse")
        return self._move_to_attic(name, same_as)

    def _move_to_attic(self, name: str, same_as: Collection[str] = ()) -> Path | None:
        """Move the top-level file `name` (a directory entry, or a checked name) out of the way into
        attic/, keeping one copy of any bytes: a wheel whose sha256 is in `same_as` (the bytes
        replacing it: a rebuild that gave a byte-identical wheel) or that the attic already holds
        is removed instead. A symbolic link is moved as the link itself. Returns where its bytes
        (or the link) are kept, or None."""
        src = self.root / name
        if not (src.exists() or src.is_symlink()):
            return None
        attic = self.root / "attic"
        if attic.is_symlink() or (attic.exists() and not attic.is_dir()):
            raise InputError(f"{attic}: not a directory of the wheelhouse (a symbolic link or a file); "
                             "remove it")
        if src.is_symlink():
            # A link could point anywhere (check_file never reads through one either): it is not
            # hashed, copied or removed for its target's bytes, and the target is never touched.
            # attic/ is one level below the link's directory, so a relative target gets "../".
            target = os.readlink(src)
            attic.mkdir(exist_ok=True)
            dest = _free_attic_name(attic, name)
            os.symlink(target if os.path.isabs(target) else os.path.join("..", target), dest)
            src.unlink()
            return dest
        digest = sha256_file(src)
        if digest in same_as:
            src.unlink()
            return None
        for kept in [attic / name, *attic.glob(f"*-{name}")] if attic.is_dir() else []:
            if (not kept.is_symlink() and kept.is_file() and kept.stat().st_size == src.stat().st_size
                    and sha256_file(kept) == digest):
                src.unlink()
                return kept
        attic.mkdir(exist_ok=True)
        dest = _free_attic_name(attic, name)
        os.replace(src, dest)
        return dest

    def quarantine(self, names: list[str], same_as: Collection[str] = ()) -> list[Path]:
        """Move wheels that no longer match the manifest to attic/ (kept for inspection, never
        deleted, but never a second copy of the same bytes, nor a copy of bytes in `same_as`: the
        wheels of a rebuild about to replace them) and drop their entries; caller holds the lock."""
        manifest = self.manifest()
        with self._no_readers():
            moved = [dest for name in names if (dest := self._to_attic(name, same_as)) is not None]
        for name in names:
            manifest.pop(name, None)
        self._write_manifest(manifest)
        self.write_index(manifest)
        return moved

    def write_index(self, manifest: Mapping[str, Any] | None = None) -> None:
        """Regenerate simple/ (PEP 503) from the manifest, atomically swapped in."""
        manifest = self.manifest() if manifest is None else manifest
        projects: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for name, e in manifest.items():
            projects.setdefault(canonicalize_name(e["dist"]), []).append((name, e))
        new = Path(tempfile.mkdtemp(prefix=".simple-", dir=self.root))
        shareable(new, 0o777)  # mkdtemp makes 0700: nobody else could read the index
        page = "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\">" \
               "<title>{t}</title></head><body>\n{body}</body></html>\n"
        links = "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects))
        (new / "index.html").write_text(page.format(t="wheelfactory wheelhouse", body=links))
        metadata = write_metadata_files(self.root, manifest)  # PEP 658: resolvers download each wheel once
        for project, files in projects.items():
            (new / project).mkdir()
            rows = []
            for name, e in sorted(files):
                rp = e.get("requires_python")
                attr = f' data-requires-python="{html.escape(rp)}"' if rp else ""
                attr += index_attributes(metadata.get(name))
                href = f"../../{html.escape(name)}#sha256={e['sha256']}"
                rows.append(f'<a href="{href}"{attr}>{html.escape(name)}</a><br>\n')
            (new / project / "index.html").write_text(page.format(t=f"Links for {project}", body="".join(rows)))
        # Which manifest this index was written from: recover() rewrites an index that does not match.
        (new / INDEX_STAMP).write_text(_manifest_digest(manifest) + "\n")
        old = self.root / f".simple-old-{os.getpid()}"
        if self.simple.exists():
            os.replace(self.simple, old)
        os.replace(new, self.simple)
        shutil.rmtree(old, ignore_errors=True)

    def _index_stamp(self) -> str | None:
        try:
            return (self.simple / INDEX_STAMP).read_text().strip()
        except OSError:
            return None

    def recover_if_idle(self, echo: Callable[[str], None] | None = None) -> list[str]:
        """recover(), if nobody holds the lock now (a process that does is publishing, and
        publishing recovers first); for the start of a command that may publish nothing."""
        if not (self.root / ".lock").exists():
            return []
        with try_lock(self.root / ".lock") as held:
            return self.recover(echo) if held else []

    def add_entries(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Record wheels already moved into the wheelhouse (e.g. by the lock's download)."""
        manifest = self.manifest()
        # The caller has just hashed these files: their size and mtime now stand for that hash.
        manifest.update({k: {"mtime_ns": (self.root / k).stat().st_mtime_ns} | dict(v) for k, v in entries.items()})
        self._write_manifest(manifest)
        self.write_index(manifest)


def _free_attic_name(attic: Path, name: str) -> Path:
    """attic/NAME, or a time-stamped name beside it when that is taken (an older build of the very
    same file name: keep both, never overwrite). A dangling link counts as taken."""
    dest = attic / name
    stamp = time.strftime('%Y%m%dT%H%M%S')
    n = 0
    while os.path.lexists(dest):
        dest = attic / (f"{stamp}-{name}" if n == 0 else f"{stamp}.{n}-{name}")
        n += 1
    return dest


def _same_slot(entry: Mapping[str, Any], info: WheelInfo) -> bool:
    """Same distribution, same public version and same tags: a newer build replaces the older."""
    try:
        old_public = Version(entry["version"]).public
    except (KeyError, InvalidVersion):
        return False
    return (canonicalize_name(entry.get("dist", "")) == info.dist and old_public == info.version.public
            and set(entry.get("tags", [])) == set(info.tags))
