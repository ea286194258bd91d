"""Reading and checking wheel files: name, tags, METADATA, integrity."""

from __future__ import annotations

import email.parser
import hashlib
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from ..core.errors import BuildError
from ..cuda.elfmachine import check_wheel_machine


@dataclass(frozen=True)
class WheelInfo:
    path: Path
    dist: str  # canonical name
    version: Version
    tags: frozenset[str]
    metadata: Message

    @property
    def requires_dist(self) -> list[str]:
        return self.metadata.get_all("Requires-Dist") or []

    @property
    def requires_python(self) -> str | None:
        return self.metadata.get("Requires-Python")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_wheel(path: Path) -> WheelInfo:
    """Parse a wheel's file name and METADATA; BuildError if it is not a valid wheel."""
    try:
        name, version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as e:
        raise BuildError(f"{path}: not a valid wheel file name: {e}") from None
    try:
        with zipfile.ZipFile(path) as zf:
            meta_names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
            records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
            if len(meta_names) != 1 or len(records) != 1:
                raise BuildError(f"{path}: a wheel holds exactly one .dist-info with METADATA and RECORD")
            metadata = email.parser.BytesParser().parsebytes(zf.read(meta_names[0]))
    except zipfile.BadZipFile as e:
        raise BuildError(f"{path}: not a valid zip archive: {e}") from None
    if canonicalize_name(metadata.get("Name", "")) != name or Version(metadata.get("Version", "0")) != version:
        raise BuildError(f"{path}: METADATA says {metadata.get('Name')} {metadata.get('Version')}, "
                         f"the file name says {name} {version}")
    return WheelInfo(path, str(name), version, frozenset(str(t) for t in tags), metadata)


def verify_wheel(path: Path) -> WheelInfo:
    """read_wheel plus a CRC check of every member (catches truncated or ZIP64-broken archives) and
    the machine of every ELF file against the platform tags (elfmachine)."""
    info = read_wheel(path)
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
    if bad is not None:
        raise BuildError(f"{path}: member {bad!r} fails its CRC check")
    check_wheel_machine(path, {tag.rsplit("-", 1)[-1] for tag in info.tags})
    return info


def require_pin(wheel: Path, dist: str, version: str) -> None:
    """Fail unless the wheel's Requires-Dist pins `dist` to exactly `version` (local label aside)."""
    info = read_wheel(wheel)
    for text in info.requires_dist:
        req = Requirement(text)
        if canonicalize_name(req.name) == canonicalize_name(dist) and req.marker is None:
            if req.specifier.contains(version, prereleases=True) and str(req.specifier).startswith("=="):
                return
            raise BuildError(f"{wheel.name} requires {text!r}, not {dist}=={version}: it would accept another "
                             f"{dist} than the factory's")
    raise BuildError(f"{wheel.name} declares no requirement on {dist}; expected {dist}=={version}")
