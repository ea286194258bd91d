"""Writing wheels: packaging a staged tree (for components whose build is not a Python project,
such as NCCL) and repacking a built wheel after post-processing (stripping, retagging).

Both go through `wheel.wheelfile.WheelFile`, which writes RECORD and uses zipfile's ZIP64
support, so wheels over 4 GiB stay valid archives.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from email.message import Message
from pathlib import Path

from packaging.utils import canonicalize_name
from wheel.wheelfile import WheelFile

from . import __version__


def dist_info_name(dist: str, version: str) -> str:
    return f"{canonicalize_name(dist).replace('-', '_')}-{version}.dist-info"


def pack_tree(tree: Path, dist: str, version: str, tag: str, out_dir: Path, *,
              summary: str, requires: Iterable[str] = (), license_file: Path | None = None,
              extra_metadata: dict[str, str] | None = None) -> Path:
    """Write `tree` (already laid out as site-packages content) as a platform wheel."""
    dist_info = tree / dist_info_name(dist, version)
    dist_info.mkdir(parents=True, exist_ok=True)
    meta = Message()
    meta["Metadata-Version"] = "2.1"
    meta["Name"] = dist
    meta["Version"] = version
    meta["Summary"] = summary
    for key, value in (extra_metadata or {}).items():
        meta[key] = value
    for req in requires:
        meta["Requires-Dist"] = req
    (dist_info / "METADATA").write_text(meta.as_string())
    wheel_meta = Message()
    wheel_meta["Wheel-Version"] = "1.0"
    wheel_meta["Generator"] = f"wheelfactory {__version__}"
    wheel_meta["Root-Is-Purelib"] = "false"
    wheel_meta["Tag"] = tag
    (dist_info / "WHEEL").write_text(wheel_meta.as_string())
    if license_file is not None:
        shutil.copyfile(license_file, dist_info / license_file.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{canonicalize_name(dist).replace('-', '_')}-{version}-{tag}.whl"
    _write(tree, out)
    return out


def _write(tree: Path, out: Path) -> None:
    # Fixed timestamps make the archive reproducible for the same inputs.
    os.environ.setdefault("SOURCE_DATE_EPOCH", "315532800")
    with WheelFile(out, "w", compression=zipfile.ZIP_DEFLATED) as wf:
        wf.write_files(str(tree))


def unpack(wheel: Path, dest: Path) -> Path:
    """Extract a wheel into dest (wheels come from our own builds; names are still checked)."""
    with zipfile.ZipFile(wheel) as zf:
        root = dest.resolve()
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if root not in target.parents and target != root:
                raise ValueError(f"{wheel}: member {info.filename!r} escapes the tree")
            zf.extract(info, dest)
            mode = info.external_attr >> 16
            if mode & 0o111:
                os.chmod(target, mode & 0o777)
    return dest


def repack(tree: Path, wheel_name: str, out_dir: Path) -> Path:
    """Write an unpacked wheel tree back as `wheel_name`, regenerating RECORD."""
    for record in tree.glob("*.dist-info/RECORD"):
        record.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".repack-", dir=out_dir))
    try:
        _write(tree, tmp_dir / wheel_name)
        final = out_dir / wheel_name
        os.replace(tmp_dir / wheel_name, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final
