"""Fetching sources into the source cache as ready-to-copy trees, verified and safely extracted.

    <cache>/sources/archives/   downloaded archives, named by their sha256
    <cache>/sources/trees/      one unpacked tree per source identity (git checkouts with submodules)

A tree appears under its final name only when complete (built in a temporary sibling, then
renamed), so an interrupted fetch is simply fetched again. With offline=True nothing is
downloaded: a missing tree is an error telling the user to run `wheelfactory fetch`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import requests
from packaging.utils import canonicalize_name, parse_sdist_filename

from .errors import BuildError, InputError
from .plan import canonical_json
from .runner import Runner
from .sources import GitSource, LocalSource, PypiSource, Source
from .wheelmeta import sha256_file

DEFAULT_INDEX = "https://pypi.org/simple"
MARKER = ".wf-source.json"


class SourceCache:
    def __init__(self, cache_dir: Path, index_url: str = DEFAULT_INDEX):
        self.root = cache_dir / "sources"
        self.archives = self.root / "archives"
        self.trees = self.root / "trees"
        self.index_url = index_url.rstrip("/")

    def tree_path(self, source: Source) -> Path:
        """Where the unpacked tree of a source lives (a LocalSource is used in place)."""
        if isinstance(source, LocalSource):
            return Path(source.path)
        digest = hashlib.sha256(canonical_json(source.identity()).encode()).hexdigest()[:20]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", source.describe().rsplit("/", 1)[-1])[:40]
        return self.trees / f"{slug}-{digest}"

    def is_fetched(self, source: Source) -> bool:
        return isinstance(source, LocalSource) or (self.tree_path(source) / MARKER).exists()

    def fetch(self, source: Source, runner: Runner, *, offline: bool = False) -> Path:
        """The source's tree, fetching it first if needed."""
        tree = self.tree_path(source)
        if self.is_fetched(source):
            return tree
        if offline:
            raise BuildError(f"source {source.describe()} is not in the cache {self.root} and --offline forbids "
                             "downloading; run `wheelfactory fetch --release ...` while online first")
        self.trees.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.trees))
        try:
            if isinstance(source, GitSource):
                info = self._git(source, tmp / "t", runner)
                top = tmp / "t"
            else:
                archive, info = (self._pypi(source) if isinstance(source, PypiSource)
                                 else (self._download(source.url, source.sha256), {"url": source.url}))
                info["archive_sha256"] = sha256_file(archive)
                top = extract_archive(archive, tmp / "x")
            (top / MARKER).write_text(json.dumps({"source": source.describe()} | info, indent=2) + "\n")
            os.replace(top, tree)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return tree

    def _git(self, source: GitSource, dest: Path, runner: Runner) -> dict[str, str]:
        runner.run(["git", "init", "-q", dest])
        # A shallow fetch of just the ref is fastest for tags and commits; servers that refuse
        # fetching a commit by id get a full fetch instead.
        try:
            runner.run(["git", "fetch", "-q", "--depth", "1", source.url, source.ref], cwd=dest)
            runner.run(["git", "checkout", "-q", "FETCH_HEAD"], cwd=dest)
        except BuildError:
            runner.run(["git", "fetch", "-q", "--tags", source.url, "+refs/heads/*:refs/remotes/origin/*"], cwd=dest)
            runner.run(["git", "checkout", "-q", _git_rev(source.ref, dest, runner)], cwd=dest)
        if source.submodules and (dest / ".gitmodules").exists():
            runner.run(["git", "submodule", "update", "-q", "--init", "--recursive", "--depth", "1"], cwd=dest)
        commit = runner.run(["git", "rev-parse", "HEAD"], cwd=dest, capture=True).strip().splitlines()[-1]
        if source.is_commit and commit != source.ref:
            raise BuildError(f"{source.url}: asked for commit {source.ref}, got {commit}")
        return {"commit": commit}

    def _download(self, url: str, sha256: str | None) -> Path:
        """Download to archives/, verifying sha256 when given; reuse a verified copy."""
        self.archives.mkdir(parents=True, exist_ok=True)
        name = url.rsplit("/", 1)[-1].split("#")[0].split("?")[0] or "archive"
        if sha256:
            cached = self.archives / f"{sha256}-{name}"
            if cached.exists() and sha256_file(cached) == sha256:
                return cached
        fd, tmp = tempfile.mkstemp(prefix=".dl-", dir=self.archives)
        try:
            with os.fdopen(fd, "wb") as f, requests.get(url, stream=True, timeout=60) as r:
                r.raise_for_status()
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
            got = sha256_file(Path(tmp))
            if sha256 and got != sha256:
                raise BuildError(f"{url}: sha256 is {got}, the release says {sha256}; refusing to use it")
            final = self.archives / f"{got}-{name}"
            os.replace(tmp, final)
            return final
        except requests.RequestException as e:
            raise BuildError(f"cannot download {url}: {e}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _pypi(self, source: PypiSource) -> tuple[Path, dict[str, str]]:
        """Find the sdist through the simple index (JSON form) and download it with its published hash."""
        project = canonicalize_name(source.name)
        url = f"{self.index_url}/{project}/"
        try:
            r = requests.get(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=60)
            r.raise_for_status()
            files = r.json()["files"]
        except (requests.RequestException, ValueError, KeyError) as e:
            raise BuildError(f"cannot read the index page {url}: {e}") from None
        for f in files:
            if not f["filename"].endswith((".tar.gz", ".zip")):
                continue
            try:
                name, version = parse_sdist_filename(f["filename"])
            except ValueError:
                continue
            if name == project and str(version) == source.version:
                published = f.get("hashes", {}).get("sha256")
                if source.sha256 and published and source.sha256 != published:
                    raise BuildError(f"{f['filename']}: the index publishes sha256 {published}, "
                                     f"the release pins {source.sha256}")
                archive = self._download(requests.compat.urljoin(url, f["url"]), source.sha256 or published)
                return archive, {"url": f["url"].split("#")[0], "filename": f["filename"]}
        raise InputError(f"{source.name} {source.version} has no sdist on {self.index_url}; "
                         "pick a version that publishes one, or use a git or url source")


def _git_rev(ref: str, repo: Path, runner: Runner) -> str:
    """A ref as given (commit, tag) or as a fetched branch."""
    for candidate in (ref, f"origin/{ref}"):
        try:
            runner.run(["git", "rev-parse", "-q", "--verify", f"{candidate}^{{commit}}"], cwd=repo, capture=True)
            return candidate
        except BuildError:
            continue
    raise BuildError(f"git ref {ref!r} is neither a commit, a tag nor a branch of the repository")


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
            zf.extractall(dest)
    else:
        try:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise BuildError(f"{archive}: refusing to extract: {e}") from None
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
