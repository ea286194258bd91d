"""`wheelfactory serve`: the wheelhouse over HTTP for the other machines of a cluster, read-only.

The standard library's server, restricted to what an installer needs: the PEP 503 index
(`/simple/`), the wheels and their PEP 658 metadata files, the locks and the manifest. Nothing
else of the directory (attic/, the lock file, temporary files) is reachable, and nothing can be
written (only GET and HEAD exist). Single byte ranges are answered, so a client that reads a
wheel's central directory by range does not download it whole.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from ..core.errors import InputError

MIME = {".whl": "application/octet-stream", ".metadata": "text/plain; charset=utf-8",
        ".txt": "text/plain; charset=utf-8",
        ".json": "application/json", ".html": "text/html; charset=utf-8"}


def allowed(url_path: str) -> bool:
    """Whether a request path names something an installer may read."""
    path = posixpath.normpath(unquote(urlsplit(url_path).path)).lstrip("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p.startswith(".") for p in parts):  # .lock, .incoming-*, .simple-*: internals
        return False
    if not parts:
        return True  # redirected to /simple/
    if parts[0] in ("simple", "locks"):
        return True
    return len(parts) == 1 and (parts[0].endswith((".whl", ".whl.metadata")) or parts[0] == "manifest.json")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as (first, last) inclusive, clipped to the file; None when the
    header is not one we answer (several ranges, another unit): the whole file is sent then.
    ValueError when it cannot be satisfied (416)."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_s:  # the last N bytes
            n = int(last_s)
            if n <= 0 or size == 0:
                raise ValueError(header)
            return max(0, size - n), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        raise ValueError(header) from None
    if first >= size or last < first:
        raise ValueError(header)
    return first, min(last, size - 1)


class _Limited:
    """A file object that reads at most `left` bytes (the body of a range response)."""

    def __init__(self, f: BinaryIO, left: int):
        self.f, self.left = f, left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n) if n > 0 else b""
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


class WheelhouseHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME}

    def send_head(self):  # type: ignore[override]
        if not allowed(self.path):
            self.send_error(HTTPStatus.NOT_FOUND, "not part of the served wheelhouse")
            return None
        if urlsplit(self.path).path in ("", "/"):
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", "/simple/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        path = self.translate_path(self.path)
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "index.html")) \
                and self.path.endswith("/"):
            self.send_error(HTTPStatus.NOT_FOUND, "no index here")  # no directory listings
            return None
        header = self.headers.get("Range")
        if header is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        try:
            span = parse_range(header, size)
        except ValueError:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if span is None:
            return super().send_head()
        first, last = span
        f = open(path, "rb")  # noqa: SIM115 -- closed by the base class after copying
        f.seek(first)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _Limited(f, last - first + 1)

    def end_headers(self) -> None:
        if self.command in ("GET", "HEAD") and "Range" not in self.headers:
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        shutil.copyfileobj(source, outputfile, 1 << 20)


def make_server(root: Path, host: str, port: int, quiet: bool = False) -> ThreadingHTTPServer:
    """A server for the wheelhouse at root (not started); InputError when it cannot be served."""
    if not (root / "simple" / "index.html").is_file():
        raise InputError(f"{root} has no simple/index.html: not a wheelhouse, or nothing published yet "
                         "(set --wheelhouse)")
    handler = partial(WheelhouseHandler, directory=str(root))
    if quiet:
        handler = partial(_QuietHandler, directory=str(root))
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise InputError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


class _QuietHandler(WheelhouseHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the base class's name
        pass
