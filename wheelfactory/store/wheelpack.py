"""Writing wheels: packaging a staged tree (for components whose build is not a Python project,
such as NCCL), repacking a built wheel after post-processing (stripping, retagging), and adding
a file to a finished wheel's .dist-info (the factory's provenance).

Both go through `wheel.wheelfile.WheelFile`, which writes RECORD and uses zipfile's ZIP64
support, so wheels over 4 GiB stay valid archives.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from email.message import Message
from pathlib import Path

from packaging.utils import canonicalize_name
from wheel.wheelfile import WheelFile

from .. import __version__
from ..core.errors import BuildError


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


# Members added to a finished wheel get the time SOURCE_DATE_EPOCH=315532800 gives every member a
# build writes (1980-01-01, the zip format's earliest): no clock reading, so no two runs differ.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


def add_dist_info_file(wheel: Path, name: str, data: bytes) -> None:
    """Add (or replace) <dist-info>/<name> in a finished wheel, in place, with RECORD regenerated.

    Every other member is copied as it is (order, name, time, mode, compression), and hashed on
    the way into the new RECORD: one pass, where unpack + repack of a multi-GB wheel takes two and
    the disk space of the tree. The same wheel and data always give the same bytes."""
    with zipfile.ZipFile(wheel) as src:
        dist_info = _dist_info_dir(src, wheel)
        record_name, added_name = f"{dist_info}/RECORD", f"{dist_info}/{name}"
        tmp = wheel.with_name(f".{wheel.name}.part")
        rows: list[tuple[str, str, str]] = []
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
                for info in src.infolist():
                    if info.filename in (record_name, added_name):
                        continue
                    out = zipfile.ZipInfo(info.filename, info.date_time)
                    out.compress_type, out.external_attr = info.compress_type, info.external_attr
                    out.create_system = info.create_system
                    if info.is_dir():
                        dst.writestr(out, b"")
                        continue
                    out.file_size = info.file_size  # lets zipfile choose ZIP64 as it did for the original
                    digest = hashlib.sha256()
                    with src.open(info) as r, dst.open(out, "w") as w:
                        while chunk := r.read(_CHUNK):
                            digest.update(chunk)
                            w.write(chunk)
                    signature = info.filename in (f"{record_name}.jws", f"{record_name}.p7s")
                    rows.append((info.filename, "" if signature else _record_hash(digest.digest()),
                                 str(info.file_size)))
                new = zipfile.ZipInfo(added_name, FIXED_DATE_TIME)
                new.compress_type, new.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                dst.writestr(new, data)
                rows.append((added_name, _record_hash(hashlib.sha256(data).digest()), str(len(data))))
                rows.append((record_name, "", ""))
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows(rows)
                record = zipfile.ZipInfo(record_name, FIXED_DATE_TIME)
                record.compress_type, record.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                dst.writestr(record, text.getvalue())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, wheel)


def _record_hash(digest: bytes) -> str:
    """RECORD's hash form (PEP 376/427): urlsafe base64 without padding."""
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _dist_info_dir(zf: zipfile.ZipFile, wheel: Path) -> str:
    """The wheel's one top-level *.dist-info directory (the one holding METADATA)."""
    found = {n.split("/")[0] for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")}
    if len(found) != 1:
        raise BuildError(f"{wheel.name}: expected one *.dist-info/METADATA in the wheel, found "
                         f"{', '.join(sorted(found)) or 'none'}")
    return found.pop()


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
