"""Provenance inside each wheel the factory builds: `<dist-info>/wheelfactory.json`.

A wheel copied out of the wheelhouse still says how it was made: its build key and the inputs the
key is the hash of (as the manifest records them), the source as fetched (commit, archive sha256),
and the toolchain that ran (nvcc, Python, platform). `wheelfactory inspect WHEEL` prints it.

The file holds no timestamp and no path of this machine (environment values keep their
${placeholders}, local sources are their tree hash), so the same inputs still give a byte-identical
wheel. Adopted wheels are never rewritten: their bytes are someone else's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..planning.plan import Step, canonical_json
from ..planning.recipe import Target
from ..sources.fetch import MARKER
from ..store.wheelpack import add_dist_info_file

FILENAME = "wheelfactory.json"
FORMAT = 1  # bumped when a field changes meaning; readers check it before trusting the layout

# What a fetched tree's marker (fetch.MARKER) adds to the source's identity: content, never places.
_SOURCE_FACTS = ("commit", "archive_sha256")


def build_provenance(step: Step, target: Target, *, venv: Path, nvcc: str | None,
                     source_info: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance record of a built step's wheels."""
    source = dict(step.key_inputs.get("source") or {})
    source |= {k: source_info[k] for k in _SOURCE_FACTS if source_info.get(k)}
    return {
        "format": FORMAT,
        "tool": f"wheelfactory {__version__}",
        "component": step.component,
        "version": step.version,
        "key": step.key,
        "source": source,
        "toolchain": {"python": venv_python_version(venv), "nvcc": nvcc, "platform": target.platform,
                      "cuda_toolkit": target.toolkit},
        "inputs": step.key_inputs,
    }


def fetched_source_info(tree: Path) -> dict[str, Any]:
    """What fetch recorded about a source tree (commit, archive sha256); {} for a local directory."""
    marker = tree / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def venv_python_version(venv: Path) -> str | None:
    """The full version of the interpreter a build venv was made with, from its pyvenv.cfg (the
    key names only major.minor; the patch release is worth knowing when a wheel misbehaves)."""
    try:
        lines = (venv / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return None
    values = dict(line.partition("=")[::2] for line in lines if "=" in line)
    values = {k.strip(): v.strip() for k, v in values.items()}
    return values.get("version_info") or values.get("version")


def render_provenance(record: Mapping[str, Any]) -> bytes:
    """The file's bytes: canonical (sorted keys), indented for people, newline-terminated."""
    return (json.dumps(json.loads(canonical_json(record)), indent=2, sort_keys=True) + "\n").encode()


def stamp_wheel(wheel: Path, record: Mapping[str, Any]) -> None:
    """Write the record into the wheel's .dist-info (replacing any earlier one), RECORD regenerated."""
    add_dist_info_file(wheel, FILENAME, render_provenance(record))
