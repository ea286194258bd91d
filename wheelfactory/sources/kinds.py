"""Source declarations: where a component's code comes from, and the identity that enters its build key.

A declaration is pure data; fetching it is `fetch.py`'s job. Recipes declare a default source
with `{version}` templates; a release may override it with any other kind.

The identity is the source's content, not its name: a git commit, an archive's sha256, a tree
digest. A tag, a branch or an sdist on an index names content only once `fetch` has resolved it
(`resolve.py` records the answer); until then the identity is the name, marked unresolved, so
the key changes once the content is known and can never be reused for other content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.grammar import check_distribution_name, check_git_ref, check_git_url, git_url_kind
from .transport import check_git_transport, check_url

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# What a key input says about a source whose content `fetch` has not recorded yet.
UNRESOLVED = "run `wheelfactory fetch`"

@dataclass(frozen=True)
class GitSource:
    """A git repository at a tag, branch or 40-hex commit, checked out with its submodules."""

    url: str
    ref: str
    submodules: bool = True
    # A branch moves: it is built only when asked for (follow = true), and re-resolved at every fetch.
    follow: bool = False
    allow_insecure: bool = False  # allow a plain http:// or git:// URL

    def with_version(self, version: str) -> GitSource:
        return dataclasses.replace(self, url=self.url.format(version=version), ref=self.ref.format(version=version))

    def identity(self, content: str | None = None) -> dict[str, Any]:
        """The commit (given as the ref, or `content`: the one fetch recorded for the ref). The URL
        is left out: the same commit from a mirror or a fork is the same tree."""
        commit = self.ref if self.is_commit else content
        if commit is None:
            return {"git": self.url, "ref": self.ref, "submodules": self.submodules, "unresolved": UNRESOLVED}
        return {"git_commit": commit, "submodules": self.submodules}

    def describe(self) -> str:
        return f"{self.url}@{self.ref}"

    @property
    def is_commit(self) -> bool:
        return bool(_HEX40.fullmatch(self.ref))


@dataclass(frozen=True)
class UrlSource:
    """A source archive (tar or zip) at a URL, verified against its sha256 before use.

    Release files must give the sha256. A recipe may leave it out only for archives whose
    publisher gives none (Triton's LLVM builds): the URL is then the identity.
    """

    url: str
    sha256: str | None
    allow_insecure: bool = False  # allow a plain http:// URL

    def with_version(self, version: str) -> UrlSource:
        return dataclasses.replace(self, url=self.url.format(version=version))

    def identity(self, content: str | None = None) -> dict[str, Any]:
        """The archive's sha256: given, or recorded by the first fetch (`content`)."""
        sha = self.sha256 or content
        return {"archive_sha256": sha} if sha else {"url": self.url, "unresolved": UNRESOLVED}

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

    def identity(self, content: str | None = None) -> dict[str, Any]:
        """The sdist's sha256: pinned, or as the index published it when fetch recorded it
        (`content`, recorded per index, so another index's file never shares its key)."""
        sha = self.sha256 or content
        return ({"archive_sha256": sha} if sha
                else {"pypi": self.name, "version": self.version, "unresolved": UNRESOLVED})

    def describe(self) -> str:
        return f"pypi:{self.name}=={self.version}"


@dataclass(frozen=True)
class LocalSource:
    """A directory on this machine (a checkout the user edits); identified by a hash of its files."""

    path: str

    def with_version(self, version: str) -> LocalSource:
        return self

    def identity(self, content: str | None = None) -> dict[str, Any]:
        # The path itself never enters the key: two checkouts with the same files are the same input.
        return {"tree_sha256": tree_digest(Path(self.path))}

    def describe(self) -> str:
        return self.path


Source = GitSource | UrlSource | PypiSource | LocalSource


def is_local_wheel(spec: str) -> bool:
    """Whether an adopt spec names a wheel file on this machine (not a URL or a requirement)."""
    return spec.endswith(".whl") and "://" not in spec

_SOURCE_KEYS = {
    "git": ({"git", "ref", "submodules", "follow", "allow_insecure"}, {"git", "ref"}),
    "url": ({"url", "sha256", "allow_insecure"}, {"url", "sha256"}),
    "pypi": ({"pypi", "version", "sha256"}, {"pypi"}),
    "path": ({"path"}, {"path"}),
}


_FLAGS = {"submodules", "follow", "allow_insecure"}


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
        # A string where a flag belongs ("no", "false") would read as true: refuse it.
        want = bool if key in _FLAGS else str
        if not isinstance(value, want):
            raise InputError(f"{where}.{key}: expected {'true or false' if want is bool else 'a string'}, "
                             f"got {value!r}")
    allow_insecure = table.get("allow_insecure", False)
    how = f"set {where}.allow_insecure = true"
    if kind == "git":
        url = check_git_url(table["git"], f"{where}.git")
        check_git_transport(url, allow_insecure, f"{where}.git", how)
        if git_url_kind(url) == "path":  # a local repository, relative to the release file like a path source
            url = str(base_dir / Path(url).expanduser())
        source = GitSource(url, check_git_ref(table["ref"], f"{where}.ref"), table.get("submodules", True),
                           table.get("follow", False), allow_insecure)
        if source.follow and source.is_commit:
            raise InputError(f"{where}.follow: ref {source.ref!r} is a commit, which never moves; follow = true "
                             "is for a branch (remove follow, or give the branch's name as ref)")
        return source
    if kind == "url":
        url = check_url(table["url"], allow_insecure, f"{where}.url", how)
        if not _HEX64.fullmatch(table["sha256"]):
            raise InputError(f"{where}.sha256: expected 64 lowercase hex digits, got {table['sha256']!r}")
        return UrlSource(url, table["sha256"], allow_insecure)
    if kind == "pypi":
        sha = table.get("sha256")
        if sha is not None and not _HEX64.fullmatch(sha):
            raise InputError(f"{where}.sha256: expected 64 lowercase hex digits, got {sha!r}")
        return PypiSource(check_distribution_name(table["pypi"], f"{where}.pypi"), table.get("version", "{version}"),
                          sha)
    if not table["path"].strip():
        # Path("") is ".": an empty path would build the release file's own directory.
        raise InputError(f"{where}.path: empty; give the directory of the component's source tree, "
                         "e.g. path = '~/src/nccl'")
    path = Path(os.path.expanduser(table["path"]))
    return local_source(path if path.is_absolute() else base_dir / path, where)


def local_source(path: Path, where: str) -> LocalSource:
    """A LocalSource for an existing directory, or an InputError naming it."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{where}: {str(path)!r} is a file, not a directory; give the source tree's directory")
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
