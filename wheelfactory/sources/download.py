"""Downloads shared by the source cache and the toolkit cache: a project's files from a simple
index (its JSON form, with hashes), and one hash-checked download into a content-addressed folder:
stream to a temporary file beside the destination, hash while writing, refuse a mismatch, and only
then rename into place as `<sha256>-<name>`, so a partial or wrong file is never seen under its
final name."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import requests

from ..core.errors import BuildError
from .transport import check_url


def download_checked(url: str, folder: Path, name: str, sha256: str | None = None, *,
                     what: str | None = None, allow_insecure: bool = False) -> Path:
    """Download url to folder/<sha256>-<name>; with sha256 given, a different file is a BuildError.
    Plain http only with allow_insecure (a file listed by an index the user opted in for)."""
    url = check_url(url, allow_insecure, what or url, "pass --allow-insecure-index for an http index")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dl-", dir=folder)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, requests.get(url, stream=True, timeout=60) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_content(1 << 20):
                f.write(chunk)
                h.update(chunk)
        got = h.hexdigest()
        if sha256 and got != sha256:
            raise BuildError(f"{what or url}: sha256 is {got}, expected {sha256}; refusing to use it")
        final = folder / f"{got}-{name}"
        os.replace(tmp, final)
        return final
    except requests.RequestException as e:
        raise BuildError(f"cannot download {what or url}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def index_files(index_url: str, project: str) -> tuple[str, list[dict]]:
    """The page URL and the `files` of a project on a PEP 691 simple index (JSON form)."""
    url = f"{index_url}/{project}/"
    try:
        r = requests.get(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=60)
        r.raise_for_status()
        return url, r.json()["files"]
    except (requests.RequestException, ValueError, KeyError) as e:
        raise BuildError(f"cannot read the index page {url}: {e}") from None
