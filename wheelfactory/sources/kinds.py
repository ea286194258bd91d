"""Source declarations: where a component's code comes from, and the identity that enters its build key.

Each kind is one class that keys, describes, resolves and fetches itself (the SourceKind
protocol); fetch.py's SourceCache holds what they share (the records, the trees, downloads, safe
extraction) and loops over them without asking which kind a source is. Recipes declare a default
source with `{version}` templates; a release may override it with any other kind.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import requests
from packaging.utils import canonicalize_name, parse_sdist_filename

from ..core.errors import BuildError, InputError
from ..core.grammar import check_distribution_name, check_git_ref, check_git_url, git_url_kind
from ..store.wheelmeta import sha256_file
from .download import index_files
from .transport import check_git_transport, check_url, is_plain

if TYPE_CHECKING:
    from ..run.runner import Runner
    from .resolve import SourceRecords

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX = re.compile(r"^[0-9a-f]{4,39}$")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# What a key input says about a source whose content `fetch` has not recorded yet.
UNRESOLVED = "run `wheelfactory fetch`"


class Asked(NamedTuple):
    """What a source's name stands for now, as a remote answered: the record to keep, the content
    (a commit or sha256) and a few words saying what was asked."""
    entry: dict[str, str]
    content: str
    what: str


class FetchServices(Protocol):
    """What a kind needs from the source cache while it resolves or fetches (fetch.py's SourceCache
    is one)."""

    index_url: str
    records: SourceRecords

    def download(self, url: str, sha256: str | None, allow_insecure: bool = False) -> Path: ...
    def unpack(self, archive: Path, dest: Path) -> Path: ...


@runtime_checkable
class SourceKind(Protocol):
    """What every kind of source does for itself. The factory's loops (resolve and fetch, the host
    check, the cache's gc, `release check`) ask these and never which kind a source is, so a new
    kind is one class here.

    Keys: identity() is what enters build keys; pinned() the content the declaration itself names;
    record_key()/content_of() its entry in resolved.json (resolve.py); known_contents() every
    content this cache has seen it stand for. Describes: describe(), origin(), local_repository(),
    checkout(). Resolves and fetches: in_place() (used where it is, never copied), ask() (the
    network), fetch_into() (a tree into a temporary directory), tree_in() (the tree's name)."""

    # An entry recorded once stays (an archive without a published sha256 is its first download).
    RECORDED_ONCE: ClassVar[bool]

    def with_version(self, version: str) -> SourceKind: ...
    def identity(self, content: str | None = None) -> dict[str, Any]: ...
    def pinned(self) -> str | None: ...
    def record_key(self, index_url: str) -> str | None: ...
    def content_of(self, entry: Mapping[str, Any]) -> str | None: ...
    def known_contents(self, records: SourceRecords) -> set[str]: ...
    def describe(self) -> str: ...
    def origin(self, index_url: str) -> str: ...
    def local_repository(self) -> Path | None: ...
    def checkout(self) -> tuple[str, str] | None: ...
    def in_place(self) -> Path | None: ...
    def tree_in(self, trees: Path, content: str) -> Path: ...
    def ask(self, cache: FetchServices, runner: Runner) -> Asked: ...
    def moved_hint(self, before: str) -> str: ...
    def fetch_into(self, cache: FetchServices, content: str, tmp: Path, runner: Runner) -> tuple[Path, dict[str, str]]:
        ...


@dataclass(frozen=True)
class GitSource:
    """A git repository at a tag, branch or 40-hex commit, checked out with its submodules."""

    url: str
    ref: str
    submodules: bool = True
    # A branch moves: it is built only when asked for (follow = true), and re-resolved at every fetch.
    follow: bool = False
    allow_insecure: bool = False  # allow a plain http:// or git:// URL

    RECORDED_ONCE: ClassVar[bool] = False

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

    def pinned(self) -> str | None:
        return self.ref if self.is_commit else None

    def record_key(self, index_url: str) -> str | None:
        return f"git {self.url} {self.ref}"

    def content_of(self, entry: Mapping[str, Any]) -> str | None:
        # A branch recorded while follow = true was set is not a pin once follow is gone.
        return entry["commit"] if entry.get("kind") != "branch" or self.follow else None

    def known_contents(self, records: SourceRecords) -> set[str]:
        if self.is_commit:
            return {self.ref}
        entry = records.get(f"git {self.url} {self.ref}")
        return {entry["commit"]} if entry and entry.get("commit") else set()

    def origin(self, index_url: str) -> str:
        """The repository; scp-like `user@host:path` as ssh://, the form a connection check reads."""
        if "://" not in self.url and (scp := scp_host(self.url)):
            return f"ssh://{scp}"
        return self.url

    def local_repository(self) -> Path | None:
        """The directory the URL names on this machine (a path or file:// URL: a mirror), or None
        for a remote one. Reaching it needs no network."""
        if self.url.lower().startswith("file://"):
            return Path(unquote(urlsplit(self.url).path))
        if "://" in self.url or scp_host(self.url):
            return None
        return Path(self.url).expanduser()

    def checkout(self) -> tuple[str, str] | None:
        return self.url, self.ref

    def in_place(self) -> Path | None:
        return None

    def tree_in(self, trees: Path, content: str) -> Path:
        return trees / (f"git-{content}" if self.submodules else f"git-{content}-nosub")

    def check(self) -> None:
        """Checked again where git runs: recipes and `release derive` make sources too."""
        where = f"git source {self.describe()}"
        check_git_url(self.url, where)
        check_git_ref(self.ref, where)
        check_git_transport(self.url, self.allow_insecure, where, "set allow_insecure = true in its source table")

    def ask(self, cache: FetchServices, runner: Runner) -> Asked:
        self.check()
        out = runner.run(["git", "ls-remote", "--", self.url, self.ref, f"{self.ref}^{{}}"], capture=True)
        commit, kind = commit_of(self, out)
        return Asked({"commit": commit, "kind": kind}, commit, f"{kind} {self.ref} of {self.url}")

    def moved_hint(self, before: str) -> str:
        return f"; to keep building the old commit, pin it in the source table: ref = \"{before}\""

    def fetch_into(self, cache: FetchServices, content: str, tmp: Path, runner: Runner) -> tuple[Path, dict[str, str]]:
        self.check()
        if not _HEX40.fullmatch(content):
            raise BuildError(f"{self.describe()}: the recorded commit {content!r} is not 40 hex digits; "
                             f"remove its entry from {cache.records.path} and run `wheelfactory fetch` again")
        dest = tmp / "t"
        runner.run(["git", "init", "-q", "--", dest])
        # A shallow fetch of the recorded commit is fastest and fetches exactly what the key names;
        # servers that refuse a commit by id get a full fetch, then the same checkout. `--` before
        # the repository: a value of a release file is never an option of git.
        try:
            runner.run(["git", "fetch", "-q", "--depth", "1", "--", self.url, content], cwd=dest)
        except BuildError:
            runner.run(["git", "fetch", "-q", "--tags", "--", self.url, "+refs/heads/*:refs/remotes/origin/*"],
                       cwd=dest)
        runner.run(["git", "checkout", "-q", content, "--"], cwd=dest)
        if self.submodules and (dest / ".gitmodules").exists():
            runner.run(["git", "submodule", "update", "-q", "--init", "--recursive", "--depth", "1"], cwd=dest)
        head = runner.run(["git", "rev-parse", "HEAD"], cwd=dest, capture=True).strip().splitlines()[-1]
        if head != content:
            raise BuildError(f"{self.url}: asked for commit {content}, got {head}")
        return dest, {"ref": self.ref, "commit": content}


def commit_of(source: GitSource, ls_remote: str) -> tuple[str, str]:
    """(commit, "tag" | "branch") of a ref from `git ls-remote URL REF REF^{}` output. A branch is
    accepted only with follow = true; a tag wins over a branch of the same name, as in git."""
    refs = {}
    for line in ls_remote.splitlines():
        commit, _, name = line.partition("\t")
        refs[name.strip()] = commit.strip()
    ref = source.ref.removeprefix("refs/tags/").removeprefix("refs/heads/")
    tag = refs.get(f"refs/tags/{ref}^{{}}") or refs.get(f"refs/tags/{ref}")  # ^{}: an annotated tag's commit
    branch = refs.get(f"refs/heads/{ref}")
    where = f"git source {source.url} ref {source.ref!r}"
    if tag and not source.ref.startswith("refs/heads/"):
        if source.follow:
            raise InputError(f"{where}: follow = true is for a branch, and {ref!r} is a tag; remove follow "
                             "(a tag is recorded once and a move is reported)")
        return tag, "tag"
    if branch:
        if not source.follow:
            raise InputError(f"{where} is a branch: a branch moves, so the same release would build other code "
                             "from one day to the next. Give a tag or a 40-hex commit, or set follow = true in "
                             "the source table to build the branch's current commit (re-resolved at every "
                             "fetch; the build key follows it)")
        return branch, "branch"
    hint = " (an abbreviated commit: give all 40 hex digits)" if _HEX.match(source.ref) else ""
    raise InputError(f"{where}: no such tag or branch in the repository{hint}")


def scp_host(url: str) -> str | None:
    """The host of git's scp-like form (`[user@]host:path`: a colon before the first slash)."""
    head, colon, _ = url.partition(":")
    return head.rpartition("@")[2] if colon and "/" not in head and head else None


class _Archive:
    """What the two archive kinds (url, pypi) share: no repository, no checkout, not used in place,
    and an unpacked tree named by the archive's sha256."""

    def local_repository(self) -> Path | None:
        return None

    def checkout(self) -> tuple[str, str] | None:
        return None

    def in_place(self) -> Path | None:
        return None

    def tree_in(self, trees: Path, content: str) -> Path:
        return trees / f"sha256-{content}"


@dataclass(frozen=True)
class UrlSource(_Archive):
    """A source archive (tar or zip) at a URL, verified against its sha256 before use.

    Release files must give the sha256. A recipe may leave it out only for archives whose
    publisher gives none (Triton's LLVM builds): the URL is then the identity.
    """

    url: str
    sha256: str | None
    allow_insecure: bool = False  # allow a plain http:// URL

    RECORDED_ONCE: ClassVar[bool] = True

    def with_version(self, version: str) -> UrlSource:
        return dataclasses.replace(self, url=self.url.format(version=version))

    def identity(self, content: str | None = None) -> dict[str, Any]:
        """The archive's sha256: given, or recorded by the first fetch (`content`)."""
        sha = self.sha256 or content
        return {"archive_sha256": sha} if sha else {"url": self.url, "unresolved": UNRESOLVED}

    def describe(self) -> str:
        return self.url

    def pinned(self) -> str | None:
        return self.sha256

    def record_key(self, index_url: str) -> str | None:
        return f"url {self.url}"

    def content_of(self, entry: Mapping[str, Any]) -> str | None:
        return entry["sha256"]

    def known_contents(self, records: SourceRecords) -> set[str]:
        entry = records.get(f"url {self.url}")
        return {s for s in (self.sha256, entry and entry.get("sha256")) if s}

    def origin(self, index_url: str) -> str:
        return self.url

    def ask(self, cache: FetchServices, runner: Runner) -> Asked:
        sha = sha256_file(cache.download(self.url, None, self.allow_insecure))
        return Asked({"sha256": sha}, sha, self.url)

    def moved_hint(self, before: str) -> str:
        return ""

    def fetch_into(self, cache: FetchServices, content: str, tmp: Path, runner: Runner) -> tuple[Path, dict[str, str]]:
        archive = cache.download(self.url, content, self.allow_insecure)
        return cache.unpack(archive, tmp / "x"), {"url": self.url, "archive_sha256": content}


@dataclass(frozen=True)
class PypiSource(_Archive):
    """An sdist from the package index, verified against the index's published sha256."""

    name: str
    version: str = "{version}"
    sha256: str | None = None  # pin it here to also guard against a re-uploaded file

    RECORDED_ONCE: ClassVar[bool] = False

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

    def pinned(self) -> str | None:
        return self.sha256

    def record_key(self, index_url: str) -> str | None:
        """With the index it came from: the same name and version on another index is another file."""
        return f"pypi {index_url.rstrip('/')} {self.name}=={self.version}"

    def content_of(self, entry: Mapping[str, Any]) -> str | None:
        return entry["sha256"]

    def known_contents(self, records: SourceRecords) -> set[str]:
        """Pinned, or recorded from any index (the same release fetched through a mirror)."""
        found = {self.sha256} if self.sha256 else set()
        suffix = f" {self.name}=={self.version}"
        return found | {e["sha256"] for k, e in records.entries().items()
                        if k.startswith("pypi ") and k.endswith(suffix) and e.get("sha256")}

    def origin(self, index_url: str) -> str:
        return index_url

    def ask(self, cache: FetchServices, runner: Runner) -> Asked:
        found = self.index_file(cache.index_url)
        sha = found["sha256"] or sha256_file(cache.download(found["url"], None, is_plain(cache.index_url)))
        return Asked({"sha256": sha, "filename": found["filename"]}, sha, f"{found['filename']} on {cache.index_url}")

    def moved_hint(self, before: str) -> str:
        return ""

    def fetch_into(self, cache: FetchServices, content: str, tmp: Path, runner: Runner) -> tuple[Path, dict[str, str]]:
        found = self.index_file(cache.index_url)
        if found["sha256"] and found["sha256"] != content:
            raise BuildError(f"{found['filename']}: {cache.index_url} now publishes sha256 {found['sha256']}, "
                             f"recorded {content}; run `wheelfactory fetch` to see the change and accept it or not")
        archive = cache.download(found["url"], content, is_plain(cache.index_url))
        return cache.unpack(archive, tmp / "x"), {"url": found["url"].split("#")[0], "filename": found["filename"],
                                                  "archive_sha256": content}

    def index_file(self, index_url: str) -> dict[str, str]:
        """The sdist's filename, absolute URL and published sha256 ("" when the index gives none),
        from the simple index's JSON form; a hash pinned in the release must match the index's."""
        project = canonicalize_name(self.name)
        url, files = index_files(index_url, project)
        for f in files:
            if not f["filename"].endswith((".tar.gz", ".zip")):
                continue
            try:
                name, version = parse_sdist_filename(f["filename"])
            except ValueError:
                continue
            if name == project and str(version) == self.version:
                published = f.get("hashes", {}).get("sha256", "")
                if self.sha256 and published and self.sha256 != published:
                    raise BuildError(f"{f['filename']}: the index publishes sha256 {published}, "
                                     f"the release pins {self.sha256}")
                return {"filename": f["filename"], "url": requests.compat.urljoin(url, f["url"]),
                        "sha256": published}
        raise InputError(f"{self.name} {self.version} has no sdist on {index_url}; "
                         "pick a version that publishes one, or use a git or url source")


@dataclass(frozen=True)
class LocalSource:
    """A directory on this machine (a checkout the user edits); identified by a hash of its files,
    used where it is: never recorded, fetched or copied into the cache."""

    path: str

    RECORDED_ONCE: ClassVar[bool] = False

    def with_version(self, version: str) -> LocalSource:
        return self

    def identity(self, content: str | None = None) -> dict[str, Any]:
        # The path itself never enters the key: two checkouts with the same files are the same input.
        return {"tree_sha256": tree_digest(Path(self.path))}

    def describe(self) -> str:
        return self.path

    def pinned(self) -> str | None:
        return None

    def record_key(self, index_url: str) -> str | None:
        return None

    def content_of(self, entry: Mapping[str, Any]) -> str | None:
        return None

    def known_contents(self, records: SourceRecords) -> set[str]:
        return set()

    def origin(self, index_url: str) -> str:
        return self.path

    def local_repository(self) -> Path | None:
        return None

    def checkout(self) -> tuple[str, str] | None:
        return None

    def in_place(self) -> Path | None:
        return Path(self.path)

    def tree_in(self, trees: Path, content: str) -> Path:
        return Path(self.path)

    def ask(self, cache: FetchServices, runner: Runner) -> Asked:
        raise TypeError("a local directory is identified by its files, never asked")

    def moved_hint(self, before: str) -> str:
        return ""

    def fetch_into(self, cache: FetchServices, content: str, tmp: Path, runner: Runner) -> tuple[Path, dict[str, str]]:
        raise TypeError("a local directory is used in place, never fetched")


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
