"""PEP 658 / PEP 714 core metadata files: `<wheel>.metadata` beside each wheel of the wheelhouse,
announced in the simple index with `data-dist-info-metadata` and `data-core-metadata`.

With them pip and uv resolve from the METADATA file alone and download each wheel once, to
install it; without them uv fetched torch's wheel twice from a served wheelhouse. The files are
the wheels' own METADATA bytes (the PEPs require them identical), rewritten whenever the index is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

SUFFIX = ".metadata"


def core_metadata(wheel: Path) -> bytes | None:
    """The wheel's .dist-info/METADATA bytes, or None if it cannot be read (missing, not a zip)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
            return zf.read(names[0]) if len(names) == 1 else None
    except (OSError, zipfile.BadZipFile):
        return None


def _write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes 0600; the index serves these files to other users (wheelhouse.shareable).
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_metadata_files(root: Path, wheels: Iterable[str]) -> dict[str, str]:
    """Write root/<wheel>.metadata for each wheel file name (only where its content changed, a
    rebuilt wheel may keep its name) and remove those of wheels no longer listed. Returns
    wheel name -> sha256 of its metadata file, for the index's attributes."""
    hashes = {}
    wanted = set(wheels)
    for name in sorted(wanted):
        data = core_metadata(root / name)
        if data is None:
            continue  # the index still links the wheel; without the attribute clients fetch it whole
        path = root / f"{name}{SUFFIX}"
        if not path.is_file() or path.read_bytes() != data:
            _write_bytes(path, data)
        hashes[name] = hashlib.sha256(data).hexdigest()
    for stale in root.glob(f"*.whl{SUFFIX}"):
        if stale.name[: -len(SUFFIX)] not in wanted:
            stale.unlink(missing_ok=True)
    return hashes


def index_attributes(sha256: str | None) -> str:
    """The anchor attributes announcing a metadata file (PEP 658's name and PEP 714's)."""
    if sha256 is None:
        return ""
    return f' data-dist-info-metadata="sha256={sha256}" data-core-metadata="sha256={sha256}"'
