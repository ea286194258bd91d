"""The build requirements' cache, one directory per package index, and each step's pinned set.

Build requirements (setuptools, cmake, ninja, ...) are downloaded from the index the run was told
to use. One shared directory for every index let a second index poison the first: a
`setuptools 999` fetched from a private or fake index was the highest version there, and the next
build against the default index — under the same key a clean machine computes — installed it and
ran its code. So:

  * each index has its own directory, `<cache>/pydeps/<host>-<sha256 of the index identity>/`;
    nothing fetched from one index is ever offered to a build against another;
  * the index identity (its normalised URL without user, password, query or fragment) enters the
    key of every step that builds, so what an honest key installs cannot depend on an index;
  * a step's build requirements are downloaded into a directory of their own (the exact files
    the index gave for them, nothing else of the cache) and hash-pinned: `pins/<id>.json` (by
    the requirements asked for) records the sha256 of each, the manifest entry records them as
    `build_requirements`, and an offline build installs only the files of its pins, hash-checked
    (an offline build of requirements never pinned -- `fetch` cannot know the wheel of a
    dependency built after it -- installs from this index's directory, still no other index's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..core.errors import BuildError
from ..store.wheelmeta import sha256_file

DEFAULT_INDEX = "https://pypi.org/simple"


def index_identity(index_url: str) -> str:
    """The index as it enters keys and directory names: scheme and host lower-cased, no user,
    password, query or fragment (where tokens ride), no trailing slash."""
    parts = urlsplit(index_url.strip())
    host = (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


def pydeps_dir(cache_dir: Path, index_url: str) -> Path:
    """This index's own build-requirements directory under <cache>/pydeps/."""
    identity = index_identity(index_url)
    host = re.sub(r"[^A-Za-z0-9.-]", "_", urlsplit(identity).hostname or "local")[:40]
    return cache_dir / "pydeps" / f"{host}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def requirements_id(requirements: Sequence[str]) -> str:
    """What a set of pins is filed under: the build requirements as asked for (a dependency wheel
    by its file name), so every key with the same requirements (another --env) finds them."""
    asked = sorted(Path(r).name if r.endswith(".whl") else r for r in requirements)
    return hashlib.sha256(json.dumps(asked).encode()).hexdigest()[:16]


def pins_path(pydeps: Path, requirements: Sequence[str]) -> Path:
    return pydeps / "pins" / f"{requirements_id(requirements)}.json"


def record_pins(pydeps: Path, requirements: Sequence[str], pins: Mapping[str, str]) -> None:
    """Write the pinned files (name -> sha256) of a set of build requirements, for offline builds."""
    path = pins_path(pydeps, requirements)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(dict(sorted(pins.items())), indent=2) + "\n")
    os.replace(tmp, path)


def read_pins(pydeps: Path, requirements: Sequence[str]) -> dict[str, str] | None:
    """The recorded pins of these requirements, or None when `fetch` (or an online build) never
    recorded them from this index."""
    try:
        data = json.loads(pins_path(pydeps, requirements).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return None
    return data


def link_pinned(pydeps: Path, pins: Mapping[str, str], into: Path) -> None:
    """Fill `into` with exactly the pinned files of this index's directory, each hash checked: a
    build venv is offered nothing else (a file changed since it was pinned is a failed step)."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    for name, sha in sorted(pins.items()):
        src = pydeps / name
        if "/" in name or name.startswith(".") or not src.is_file() or src.is_symlink():
            raise BuildError(f"{src}: pinned build requirement missing; run `wheelfactory fetch` while online")
        if sha256_file(src) != sha:
            raise BuildError(f"{src}: sha256 {sha256_file(src)}, pinned as {sha}; it changed since it was "
                             "downloaded (remove it and run `wheelfactory fetch`)")
        try:
            os.link(src, into / name)
        except OSError:  # another file system, or no hard links: a copy is the same bytes
            shutil.copyfile(src, into / name)
