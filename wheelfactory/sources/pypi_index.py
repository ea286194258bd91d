"""What a package index says about a project: its versions, its files, a wheel's METADATA.

Through the simple API's JSON form (PEP 691). A wheel's METADATA comes from the PEP 658 file
(`<wheel url>.metadata`) when the index offers one; otherwise it is read out of the remote wheel
with HTTP range requests (the zip's central directory at the end, then that one member), so
learning torch's Requires-Dist costs a few hundred kB instead of a 450 MB download.
"""

from __future__ import annotations

import email.parser
import struct
import zlib
from collections.abc import Callable
from email.message import Message

import requests
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from ..core.errors import BuildError
from .transport import INDEX_SCHEMES, check_url, is_plain

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"

# (url, headers) -> response; a seam so that tests serve bytes from memory.
Getter = Callable[..., requests.Response]


class Index:
    def __init__(self, url: str = "https://pypi.org/simple", get: Getter | None = None):
        self.url = url.rstrip("/")
        self._get = get or (lambda u, headers=None: requests.get(u, headers=headers, timeout=60))
        self._projects: dict[str, dict] = {}

    def _fetch(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        # A file the index lists travels over plain http only when the index itself does (opted in).
        url = check_url(url, is_plain(self.url), url, "pass --allow-insecure-index for an http index",
                        INDEX_SCHEMES)
        try:
            r = self._get(url, headers=headers)
            r.raise_for_status()
            return r
        except requests.RequestException as e:
            raise BuildError(f"cannot read {url}: {e}") from None

    def project(self, name: str) -> dict:
        key = canonicalize_name(name)
        if key not in self._projects:
            url = f"{self.url}/{key}/"
            try:
                self._projects[key] = self._fetch(url, {"Accept": JSON_ACCEPT}).json()
            except ValueError as e:
                raise BuildError(f"{url}: not the JSON simple API ({e})") from None
        return self._projects[key]

    def versions(self, name: str) -> list[Version]:
        """Every version with at least one file that is not yanked, oldest first."""
        found = set()
        for f in self.project(name).get("files", []):
            if f.get("yanked"):
                continue
            v = _file_version(f["filename"])
            if v is not None:
                found.add(v)
        return sorted(found)

    def wheels(self, name: str, version: str) -> list[dict]:
        out = []
        for f in self.project(name).get("files", []):
            if f["filename"].endswith(".whl") and _file_version(f["filename"]) == Version(version):
                out.append(f)
        return out

    def metadata(self, file: dict) -> Message:
        """A wheel's METADATA, from the index's PEP 658 file or by range requests into the wheel."""
        if file.get("core-metadata") or file.get("data-dist-info-metadata"):
            text = self._fetch(file["url"] + ".metadata").text
        else:
            text = read_wheel_metadata(file["url"], self._fetch)
        return email.parser.Parser().parsestr(text)


def _file_version(filename: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def read_wheel_metadata(url: str, fetch: Callable[..., requests.Response]) -> str:
    """The top-level *.dist-info/METADATA of the wheel at url, read with HTTP range requests."""
    tail = fetch(url, {"Range": "bytes=-65536"})
    if tail.status_code != 206:
        raise BuildError(f"{url}: the server ignores range requests; cannot read METADATA without downloading")
    total = int(tail.headers["Content-Range"].rsplit("/", 1)[1])
    data, base = tail.content, total - len(tail.content)
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0:
        raise BuildError(f"{url}: no zip end-of-central-directory record in the last 64 kB")
    cd_size, cd_offset = struct.unpack("<II", data[eocd + 12:eocd + 20])
    if cd_offset < base:
        data, base = fetch(url, {"Range": f"bytes={cd_offset}-{total - 1}"}).content, cd_offset
    directory = data[cd_offset - base:cd_offset - base + cd_size]
    p = 0
    while p + 46 <= len(directory) and directory[p:p + 4] == b"PK\x01\x02":
        method = struct.unpack("<H", directory[p + 10:p + 12])[0]
        csize = struct.unpack("<I", directory[p + 20:p + 24])[0]
        nlen, elen, clen = struct.unpack("<HHH", directory[p + 28:p + 34])
        offset = struct.unpack("<I", directory[p + 42:p + 46])[0]
        name = directory[p + 46:p + 46 + nlen].decode()
        p += 46 + nlen + elen + clen
        if name.count("/") == 1 and name.endswith(".dist-info/METADATA"):
            header = fetch(url, {"Range": f"bytes={offset}-{offset + 29}"}).content
            hn, he = struct.unpack("<HH", header[26:30])
            start = offset + 30 + hn + he
            raw = fetch(url, {"Range": f"bytes={start}-{start + csize - 1}"}).content
            if method == 8:
                raw = zlib.decompress(raw, -15)
            elif method != 0:
                raise BuildError(f"{url}: {name} uses zip method {method}, which this reader does not know")
            return raw.decode()
    raise BuildError(f"{url}: no .dist-info/METADATA in the wheel's directory")
