"""The vLLM images' entrypoint in a real container on this machine, which has no GPU: silent, then the
command; a recorded 570 driver (a fake nvidia-smi) refused for a CUDA 13.1 image with exit 78.

The image is small: the base, the imagefiles every image carries, a venv, and the ENV, ENTRYPOINT
and CMD lines of the 0.33.0 release's generated Dockerfile, copied from it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from assemble.bases import find_base, load_bases
from assemble.context import write_image_files
from assemble.docker import Docker
from assemble.dockerfile import render_dockerfile
from assemble.spec import Settings, image_specs
from wheelfactory.pipeline.factory import Factory

from .conftest import RECIPES

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TAG = "wheelfactory-test/entrypoint:1"
BASE = "local/debian-py:bookworm"
DRIVERS = Path(__file__).resolve().parent / "data" / "drivers"


def gate_lines(factory: Factory) -> list[str]:
    """The ENV (continued), ENTRYPOINT and CMD lines of the 0.33.0 image's Dockerfile."""
    [spec] = image_specs(factory.release("0.33.0-t5"), RECIPES, Settings(base_image=BASE))
    text = render_dockerfile(spec, find_base(BASE, load_bases()), [])
    lines, keep = [], False
    for line in text.splitlines():
        keep = keep or line.startswith("ENV ")
        if line.startswith("ARG "):
            break
        if keep and not line.startswith("#"):
            lines.append(line)
    assert any(x.startswith("ENTRYPOINT ") for x in lines) and any(x.startswith("CMD ") for x in lines)
    return lines


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory):
    d = Docker()
    if d.engine_error() or d.inspect(BASE) is None:
        pytest.skip(f"no Docker engine or no {BASE}; run .ci/docker-engine.sh")
    ctx = tmp_path_factory.mktemp("entrypoint")
    write_image_files(ctx)
    factory = Factory(RECIPES, ctx / "wheelhouse", ctx / "cache")
    # the venv without .pyc, as the assembler's images have none that no RECORD lists
    venv = "RUN /usr/bin/python3 -m venv /opt/venv && find /opt/venv -name '*.pyc' -delete"
    (ctx / "Dockerfile").write_text("\n".join([f"FROM {BASE}", "COPY imagefiles/ /opt/wheelfactory/", venv,
                                               *gate_lines(factory), ""]))
    r = subprocess.run([d.binary, "build", "--network=none", "-t", TAG, str(ctx)],
                       env=dict(os.environ, DOCKER_BUILDKIT="1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    yield d
    subprocess.run([d.binary, "rmi", "-f", TAG], capture_output=True)


def run(d: Docker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([d.binary, "run", "--rm", "--network=none", *args], capture_output=True, text=True,
                          timeout=120)


def test_no_gpu_starts_the_command_without_a_word(image: Docker) -> None:
    r = run(image, TAG, "python", "-c", "print('started')")
    assert r.returncode == 0 and r.stdout == "started\n" and r.stderr == "", r.stderr


def test_the_gate_writes_no_pyc(image: Docker) -> None:
    # the venv's .pth hooks (setuptools' _distutils_hack) would write .pyc files no RECORD lists
    listing = ["-B", "-c", "import glob; print(sorted(glob.glob('/opt/**/*.pyc', recursive=True)))"]
    without_gate = run(image, "--entrypoint", "/opt/venv/bin/python", TAG, *listing)
    through_gate = run(image, TAG, "python", *listing)
    assert without_gate.returncode == 0 and through_gate.returncode == 0, through_gate.stderr
    assert through_gate.stdout == without_gate.stdout


def test_default_command_is_vllm_serve(image: Docker) -> None:
    r = run(image, TAG)  # this small image has no vllm: the entrypoint says what it tried to start
    assert r.returncode == 127 and "cannot start 'vllm'" in r.stderr, r.stderr


def test_recorded_570_driver_is_refused(image: Docker, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{(DRIVERS / 'nvidia-smi-570.txt').read_text()}EOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    mount = f"{fake}:/usr/local/bin/nvidia-smi:ro"
    r = run(image, "-v", mount, TAG, "python", "-c", "print('started')")
    assert r.returncode == 78 and r.stdout == "", r.stdout
    assert "needs an NVIDIA driver >= 580" in r.stderr and "570.133.20" in r.stderr, r.stderr
    r = run(image, "-v", mount, "-e", "WHEELFACTORY_SKIP_DRIVER_CHECK=1", TAG, "python", "-c", "print('started')")
    assert r.returncode == 0 and r.stdout == "started\n", r.stderr
