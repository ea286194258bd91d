"""`wheelfactory verify`: is the wheelhouse what its manifest, index and locks say it is?

Every file is hashed in full (this is the slow, thorough check; builds use the size+mtime fast
path of Wheelhouse.check_file). Problems are collected, not raised one by one, so a single run
lists everything a copy, a disk error or a hand edit broke.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from packaging.utils import canonicalize_name

from ..core.errors import BuildError
from .wheelhouse import Wheelhouse, plain_wheel_name
from .wheelmeta import sha256_file

_LINK = re.compile(r'<a href="([^"]*)"')
_LOCK_LINE = re.compile(r"^(?P<req>\S+)\s+--hash=sha256:(?P<sha>[0-9a-f]{64})\s*$")


def verify_wheelhouse(wh: Wheelhouse) -> list[str]:
    """Every problem found, one line each; [] when the wheelhouse is consistent."""
    try:
        manifest = wh.manifest()
    except BuildError as e:
        return [str(e)]
    problems: list[str] = []
    actual: dict[str, str] = {}  # file name -> sha256 of the file on disk
    for name, entry in sorted(manifest.items()):
        path = wh.root / name
        if path.is_symlink():  # a link could point outside the wheelhouse: never read through it
            problems.append(f"{name}: a symbolic link, not a file of the wheelhouse (not followed)")
            continue
        if not path.is_file():
            problems.append(f"{name}: in manifest.json, missing from the wheelhouse")
            continue
        actual[name] = sha256_file(path)
        if actual[name] != entry.get("sha256"):
            problems.append(f"{name}: sha256 {actual[name]}, manifest.json recorded {entry.get('sha256')}")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"{name}: {path.stat().st_size} bytes, manifest.json recorded {entry.get('size')}")
    leftovers = [*wh.root.glob(".incoming-*"), *wh.root.glob(".simple-*"), *wh.root.glob(".download-*")]
    for leftover in sorted(leftovers):
        problems.append(f"{leftover.name}/: left by an interrupted publish or download (the next build or lock "
                        "removes it)")
    for path in sorted(wh.root.glob("*.whl")):
        if path.name not in manifest:
            problems.append(f"{path.name}: in the wheelhouse, missing from manifest.json")
    problems += _check_index(wh, manifest)
    problems += _check_locks(wh, manifest, actual)
    return problems


def _links(page: Path) -> list[str]:
    return [html.unescape(h) for h in _LINK.findall(page.read_text(errors="replace"))]


def _check_index(wh: Wheelhouse, manifest: dict[str, dict]) -> list[str]:
    """simple/ must link exactly the manifest's wheels, each with the manifest's sha256."""
    if not manifest and not wh.simple.exists():
        return []
    root_page = wh.simple / "index.html"
    if not root_page.is_file():
        return [f"{root_page}: missing (rewrite it by publishing, or restore simple/)"]
    problems = []
    expected: dict[str, dict[str, str]] = {}
    for name, entry in manifest.items():
        project = canonicalize_name(entry.get("dist", name.split("-")[0]))
        expected.setdefault(project, {})[name] = entry.get("sha256", "")
    listed = {h.rstrip("/") for h in _links(root_page)}
    for project in sorted(set(expected) - listed):
        problems.append(f"simple/index.html: does not list {project}")
    for project in sorted(listed - set(expected)):
        problems.append(f"simple/index.html: lists {project}, which manifest.json does not hold")
    for project, files in sorted(expected.items()):
        page = wh.simple / project / "index.html"
        if not page.is_file():
            problems.append(f"simple/{project}/index.html: missing")
            continue
        linked = {}
        for href in _links(page):
            target, _, fragment = href.partition("#sha256=")
            linked[Path(target).name] = fragment
        for name in sorted(set(files) - set(linked)):
            problems.append(f"simple/{project}/index.html: does not link {name}")
        for name in sorted(set(linked) - set(files)):
            problems.append(f"simple/{project}/index.html: links {name}, which manifest.json does not hold")
        for name in sorted(set(files) & set(linked)):
            if linked[name] != files[name]:
                problems.append(f"simple/{project}/index.html: {name} with sha256 {linked[name] or '(none)'}, "
                                f"manifest.json recorded {files[name]}")
    return problems


def _check_locks(wh: Wheelhouse, manifest: dict[str, dict], actual: dict[str, str]) -> list[str]:
    """Each lock's hashes must be those of wheels the wheelhouse holds (what pip --require-hashes
    would install from it), and each lock.json file must exist with its recorded hash."""
    problems = []
    on_disk = set(actual.values())
    for txt in sorted(wh.locks_dir.glob("*.txt")) if wh.locks_dir.is_dir() else []:
        for n, line in enumerate(txt.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            m = _LOCK_LINE.match(line)
            if m is None:
                problems.append(f"locks/{txt.name}:{n}: not a 'name==version --hash=sha256:...' line: {line!r}")
            elif m["sha"] not in on_disk:
                problems.append(f"locks/{txt.name}:{n}: {m['req']} sha256 {m['sha']} matches no wheel in the "
                                "wheelhouse")
    for lock_json in sorted(wh.locks_dir.glob("*.json")) if wh.locks_dir.is_dir() else []:
        try:
            packages = json.loads(lock_json.read_text()).get("packages", [])
        except json.JSONDecodeError as e:
            problems.append(f"locks/{lock_json.name}: not valid JSON: {e}")
            continue
        for pkg in packages:
            name, sha = (pkg.get("filename"), pkg.get("sha256")) if isinstance(pkg, dict) else (pkg, None)
            if (why := plain_wheel_name(name)) is not None:
                problems.append(f"locks/{lock_json.name}: entry {name!r} is {why}")
            elif name not in manifest:
                problems.append(f"locks/{lock_json.name}: {name} is not in manifest.json")
            elif name in actual and actual[name] != sha:
                problems.append(f"locks/{lock_json.name}: {name} locked with sha256 {sha}, the file has {actual[name]}")
    return problems
