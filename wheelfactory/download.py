"""One hash-checked download into a content-addressed folder, shared by the source cache and the
toolkit cache: stream to a temporary file beside the destination, hash while writing, refuse a
mismatch, and only then rename into place as `<sha256>-<name>`, so a partial or wrong file is never
seen under its final name."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import requests

from .errors import BuildError


def download_checked(url: str, folder: Path, name: str, sha256: str | None = None, *,
                     what: str | None = None) -> Path:
    """Download url to folder/<sha256>-<name>; with sha256 given, a different file is a BuildError."""
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
