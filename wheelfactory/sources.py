"""Source declarations: where a component's code comes from, and the identity that enters its build key.

A declaration is pure data; fetching it is `fetch.py`'s job. Recipes declare a default source
with `{version}` templates; a release may override it with any other kind.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class GitSource:
    """A git repository at a tag, branch or 40-hex commit, checked out with its submodules."""

    url: str
    ref: str
    submodules: bool = True

    def with_version(self, version: str) -> GitSource:
        return GitSource(self.url.format(version=version), self.ref.format(version=version), self.submodules)

    def identity(self) -> dict[str, Any]:
        # Tags and commits name fixed content; a branch moves, which `fetch` reports.
        return {"git": self.url, "ref": self.ref, "submodules": self.submodules}

    def describe(self) -> str:
        return f"{self.url}@{self.ref}"

    @property
    def is_commit(self) -> bool:
        return bool(_HEX40.match(self.ref))


@dataclass(frozen=True)
class UrlSource:
    """A source archive (tar or zip) at a URL, verified against its sha256 before use.

    Release files must give the sha256. A recipe may leave it out only for archives whose
    publisher gives none (Triton's LLVM builds): the URL is then the identity.
    """

    url: str
    sha256: str | None

    def with_version(self, version: str) -> UrlSource:
        return UrlSource(self.url.format(version=version), self.sha256)

    def identity(self) -> dict[str, Any]:
        return {"archive_sha256": self.sha256} if self.sha256 else {"url": self.url}

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class PypiSource:
    """An sdist from the package index, verified against the index's published sha256."""

    name: str
    version: str = "{version}"
    sha256: str | None = None  # pin it here to also guard against a re-uploaded file

    def with_version(self, version: str) -> PypiSource:
        return PypiSource(self.name, self.version.format(version=version), self.sha256)

    def identity(self) -> dict[str, Any]:
        return {"pypi": self.name, "version": self.version, "sha256": self.sha256}

    def describe(self) -> str:
        return f"pypi:{self.name}=={self.version}"


@dataclass(frozen=True)
class LocalSource:
    """A directory on this machine (a checkout the user edits); identified by a hash of its files."""

    path: str

    def with_version(self, version: str) -> LocalSource:
        return self

    def identity(self) -> dict[str, Any]:
        # The path itself never enters the key: two checkouts with the same files are the same input.
        return {"tree_sha256": tree_digest(Path(self.path))}

    def describe(self) -> str:
        return self.path


Source = GitSource | UrlSource | PypiSource | LocalSource


def is_local_wheel(spec: str) -> bool:
    """Whether an adopt spec names a wheel file on this machine (not a URL or a requirement)."""
    return spec.endswith(".whl") and "://" not in spec

_SOURCE_KEYS = {
    "git": ({"git", "ref", "submodules"}, {"git", "ref"}),
    "url": ({"url", "sha256"}, {"url", "sha256"}),
    "pypi": ({"pypi", "version", "sha256"}, {"pypi"}),
    "path": ({"path"}, {"path"}),
}


def source_from_table(table: dict[str, Any], where: str, base_dir: Path) -> Source:
    """Build a source from a release file's `source` table, validating its keys."""
    kinds = [k for k in _SOURCE_KEYS if k in table]
    if len(kinds) != 1:
        raise InputError(f"{where}: a source names exactly one of 'git', 'url', 'pypi' or 'path' "
                         f"(got {sorted(table) or 'nothing'})")
    kind = kinds[0]
    allowed, required = _SOURCE_KEYS[kind]
    unknown = set(table) - allowed
    if unknown:
        raise InputError(f"{where}: unknown key {sorted(unknown)[0]!r} in a {kind} source; "
                         f"allowed: {', '.join(sorted(allowed))}")
    missing = required - set(table)
    if missing:
        raise InputError(f"{where}: a {kind} source needs {', '.join(sorted(missing))}")
    for key, value in table.items():
        if key != "submodules" and not isinstance(value, str):
            raise InputError(f"{where}.{key}: expected a string, got {value!r}")
    if kind == "git":
        return GitSource(table["git"], table["ref"], bool(table.get("submodules", True)))
    if kind == "url":
        if not _HEX64.match(table["sha256"]):
            raise InputError(f"{where}.sha256: expected 64 lowercase hex digits, got {table['sha256']!r}")
        return UrlSource(table["url"], table["sha256"])
    if kind == "pypi":
        sha = table.get("sha256")
        if sha is not None and not _HEX64.match(sha):
            raise InputError(f"{where}.sha256: expected 64 lowercase hex digits, got {sha!r}")
        return PypiSource(table["pypi"], table.get("version", "{version}"), sha)
    path = Path(os.path.expanduser(table["path"]))
    return local_source(path if path.is_absolute() else base_dir / path, where)


def local_source(path: Path, where: str) -> LocalSource:
    """A LocalSource for an existing directory, or an InputError naming it."""
    if not path.is_dir():
        raise InputError(f"{where}: source directory {str(path)!r} does not exist")
    return LocalSource(str(path.resolve()))


# Build outputs and VCS metadata inside a checkout are not source.
_TREE_SKIP = {".git", "__pycache__", ".wf-source.json"}


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths, modes and contents of the files under root."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _TREE_SKIP)
        for name in sorted(filenames):
            if name in _TREE_SKIP:
                continue
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                h.update(f"L {rel} {os.readlink(full)}\n".encode())
                continue
            h.update(f"F {rel} {full.stat().st_mode & 0o111:o}\n".encode())
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()
