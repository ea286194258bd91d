"""The always-on slice of the aarch64 CI chain, end to end on the emulated aarch64 machine
(.ci/arm64-env.sh's arm64 image under qemu): the same real steps as the full chain
(tests/test_ci_chain_arm64.py) with smaller inputs, so that it fits CI.

.ci/arm64-chain.sh builds tests/data/arm64-slice/releases/ci-arm64-slice.toml in an arm64 container:
the NCCL stand-in compiled by the aarch64 nvcc of NVIDIA's aarch64 toolkit wheels (downloaded and
assembled by the build, as in the full chain), and a C-extension stand-in (tests/fixtures/cext-standin)
built from source by the aarch64 gcc; `lock` resolves the aarch64 closure with two PyPI pins (six, pure
Python; markupsafe, PyPI's aarch64 wheel). A second container with no network makes the venv from the
lock and imports it. Then, on this host, the slice's arm64 image is built (RUN steps under emulation),
closure-checked and smoke-tested under emulation.

What was shrunk, and why (bench/README.md, "aarch64 under emulation", measured on a loaded 2-core
x86_64 host): torch is not adopted (its publish checks 72 s, and every venv and image of it pays for
104 MB of wheel), FlashInfer and vLLM are not built from their sdists (450 s and 437 s), their
152-package PyPI closure is not locked (474 s) and flashinfer's import took 378 s under qemu. The
C-extension stand-in keeps what those builds do on aarch64 (a from-source compile of Python C code
under emulation, a linux_aarch64 wheel, its import), the pins keep the lock's aarch64 wheel choice.
The full chain stays opt-in: WHEELFACTORY_TEST_ARM64_CHAIN=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.utils import parse_wheel_filename

from assemble.cli import images
from assemble.docker import Docker
from wheelfactory.cuda.audit import audit_wheel, judge
from wheelfactory.cuda.elfmachine import header_machine
from wheelfactory.pipeline.factory import Factory

from .conftest import RECIPES, docker_or_skip
from .test_assemble_docker import NCCL_CHECK
from .test_ci_chain_arm64 import BASE, chain

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SLICE_RECIPES = Path(__file__).resolve().parent / "data" / "arm64-slice"
RELEASE = SLICE_RECIPES / "releases" / "ci-arm64-slice.toml"
IMAGE = "wheelfactory-ci/slice-arm64:0.1.0"
STACK = {"nvidia-nccl-cu13": "2.29.2", "cext-standin": "0.1.0", "six": "1.17.0", "markupsafe": "3.0.3"}
CHAIN_ENV = {"RELEASE": "tests/data/arm64-slice/releases/ci-arm64-slice.toml", "RECIPES_DIR": "tests/data/arm64-slice",
             "COMPONENTS": "nccl cext", "IMPORTS": "cext_standin markupsafe six"}


@pytest.fixture(scope="module")
def docker() -> Docker:
    return docker_or_skip(BASE, ".ci/arm64-env.sh")


@pytest.fixture(scope="module")
def slice_wf(docker: Docker, tmp_path_factory) -> Iterator[Path]:
    """The chain's /wf after the build phase (online) and the offline install phase."""
    kept = os.environ.get("WHEELFACTORY_TEST_ARM64_SLICE_WF")
    wf = Path(kept or tmp_path_factory.mktemp("arm64-slice"))
    if not (wf / "wheelhouse" / "locks" / "ci-arm64-slice.json").exists():
        r = chain(docker, wf, "build", "host", CHAIN_ENV)
        assert r.returncode == 0, f"arm64 build phase failed:\n{r.stderr[-6000:]}"
    r = chain(docker, wf, "install", "none", CHAIN_ENV)
    assert r.returncode == 0, f"arm64 install phase failed:\n{r.stderr[-6000:]}"
    print("\n" + (wf / "timings.tsv").read_text())  # the emulated step times, shown with -s
    yield wf
    if not kept:
        # The aarch64 toolkit (3.3 GB assembled), the caches and venvs: CI's disk is shared, and pytest
        # keeps its last temporary directories. The wheelhouse stays (small).
        for d in ("toolkits", "cache", "work"):
            shutil.rmtree(wf / d, ignore_errors=True)


def test_the_slice_imports_offline_on_aarch64(slice_wf):
    words = (slice_wf / "imports.txt").read_text().split()
    assert words[0] == "aarch64"
    versions = dict(zip(words[1::2], words[2::2], strict=True))
    assert versions == {"cext_standin": "-", "markupsafe": "3.0.3", "six": "1.17.0"}


def test_the_lock_is_the_aarch64_closure_of_the_slice(slice_wf):
    lock = json.loads((slice_wf / "wheelhouse" / "locks" / "ci-arm64-slice.json").read_text())
    assert lock["platform"] == "linux_aarch64"
    versions = {p["name"]: p["version"] for p in lock["packages"]}
    assert sorted(versions) == sorted(STACK)
    for dist, version in STACK.items():  # the factory's own wheels carry a local +wf.<key> version
        assert versions[dist] == version or versions[dist].startswith(f"{version}+wf."), versions
    for p in lock["packages"]:
        platforms = {t.platform for t in parse_wheel_filename(p["filename"])[3]}
        assert platforms == {"any"} or all(t.endswith("aarch64") for t in platforms), p["filename"]
    markupsafe = next(p for p in lock["packages"] if p["name"] == "markupsafe")
    assert "aarch64" in markupsafe["filename"]  # PyPI's aarch64 wheel, not its sdist nor an x86_64 one


def test_every_elf_in_the_wheelhouse_is_aarch64(slice_wf):
    manifest = json.loads((slice_wf / "wheelhouse" / "manifest.json").read_text())["wheels"]
    machines = {}
    for name in manifest:
        with zipfile.ZipFile(slice_wf / "wheelhouse" / name) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    machine = header_machine(f.read(64))
                if machine is not None:
                    machines[f"{name}:{info.filename}"] = machine
    built = sorted(name for name, entry in manifest.items() if entry["origin"] == "built")
    assert [n.split("-")[0] for n in built] == ["cext_standin", "nvidia_nccl_cu13"]
    for name in built:
        assert all(t.platform.endswith("_aarch64") for t in parse_wheel_filename(name)[3]), name
    # libnccl.so.2, the stand-in's extension and markupsafe's speedups at least
    assert len({m.split(":")[0] for m in machines}) == 3
    assert set(machines.values()) == {"EM_AARCH64"}, machines


def test_the_nccl_wheel_holds_native_code_for_the_spark(slice_wf):
    [nccl] = (slice_wf / "wheelhouse").glob("nvidia_nccl_cu13-*.whl")
    verdict = judge(audit_wheel(nccl), ["12.1a"])
    assert verdict.ok and verdict.objects and all(o.status == "native" for o in verdict.objects)


@pytest.fixture(scope="module")
def slice_image(docker: Docker, slice_wf, tmp_path_factory):
    """The slice's arm64 image, built here from the emulated machine's wheelhouse and lock."""
    factory = Factory(SLICE_RECIPES, slice_wf / "wheelhouse", tmp_path_factory.mktemp("img-cache"),
                      shipped_recipes_dir=RECIPES)
    out = tmp_path_factory.mktemp("arm64-slice-images")
    result = CliRunner().invoke(images, ["-r", str(RELEASE), "--output-dir", str(out)], obj=factory)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    yield out, result.output
    subprocess.run([docker.binary, "rmi", "-f", IMAGE], capture_output=True)


def test_the_arm64_image_is_arm64_and_its_closure_holds(docker: Docker, slice_image):
    out, output = slice_image
    info = docker.inspect(IMAGE)
    assert info is not None and info["Architecture"] == "arm64" and info["Os"] == "linux"
    assert f"closure of {IMAGE}: " in output and " 0 missing" in output
    assert "--platform=linux/arm64" in (out / "ci-arm64-slice" / "runtime.build.log").read_text().splitlines()[0]


def test_the_arm64_image_runs_the_slice_under_emulation(docker: Docker, slice_image):
    r = docker.run(IMAGE, ["python", "-c", "import platform, cext_standin, markupsafe, six; "
                           "print(platform.machine(), cext_standin.machine(), cext_standin.add(2, 3))"],
                   platform="linux/arm64")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["aarch64", "aarch64", "5"]
    r = docker.run(IMAGE, ["python", "-c", NCCL_CHECK], platform="linux/arm64")
    assert r.returncode == 0 and r.stdout.startswith("nccl "), r.stderr[-2000:]
