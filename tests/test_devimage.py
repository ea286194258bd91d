"""The PyTorch dev image of a CI release, built and used: a CUDA extension compiled inside it offline.

tests/releases/ci-dev.toml adopts PyPI's torch 2.14.1 for x86_64 (a CUDA 13.0 build: libtorch_cuda,
libc10_cuda) and NVIDIA's NCCL 2.30.7, and is locked from PyPI; `wheelfactory images` builds its
dev and runtime images on the local Debian base (the dev image's apt step through the host's
network: the CI engine has no default bridge). Inside the dev image, with `--network none`:

* the custom op of tests/fixtures/torch-cuda-op is built into a wheel by `wheelfactory` itself
  (installed from wheels, no index), against the image's torch adopted with `adopt --from-python`,
  through torch.utils.cpp_extension, for the release's arch list (TORCH_CUDA_ARCH_LIST of the image);
* the same op is built with CMake and find_package(Torch);
* both are loaded by torch and called on the Meta device (there is no GPU), and the factory's
  device-code audit finds sm_121a code in each .so.

Measured on CI's kind of machine (2 cores) while other work loaded it (load average ~10), before the
lock's one-CUDA constraint and the ci-dev overrides it needs (README: What was run where): the whole
file 25 min 11 s: build (adopt) 57 s, lock 334 s (~3 GB of torch's CUDA wheels from PyPI), both
images 461 s, the closure check of the dev image and pyodbc 100 s, wheelfactory's wheels 19 s, and
512 s inside the dev image (repacking the image's torch for `adopt --from-python` is most of it;
the cpp_extension and CMake builds of the op 1-2 min each). Earlier in the same session, with less
load, build + lock took 107 s and the dev image's build 167 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

import pytest
from click.testing import CliRunner

from assemble.assembler import Assembler, Prepared
from assemble.cli import images
from assemble.docker import Docker
from assemble.spec import Settings
from wheelfactory.cuda import audit, fatbin
from wheelfactory.pipeline.factory import Factory

from .conftest import CI_RELEASES, RECIPES, REPO, docker_or_skip, run_cli, scratch

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RELEASE = CI_RELEASES / "ci-dev.toml"
DEV = "wheelfactory-ci/pytorch-dev:2.14.1-cu130"
RUNTIME = "wheelfactory-ci/pytorch-runtime:2.14.1-cu130"
NS = "dev.wheelfactory"
ARCH = "12.1a"

# Inside the dev image, no network: wheelfactory from wheels, the image's torch adopted, the op built
# by the factory (cpp_extension) and by CMake, both loaded and called on the Meta device.
IN_IMAGE = r"""
set -eu
PS4='+ [$SECONDS s] ' && set -x
export HOME=/tmp/home && mkdir -p $HOME /out/cmake
# the image's toolkit is the release's: the factory builds with it (CUDA_HOME) instead of assembling one
export WHEELFACTORY_SYSTEM_CUDA=1
pip install -q --no-index --find-links /wf wheelfactory
wf="wheelfactory --cache-dir /tmp/wf --wheelhouse /tmp/wh --recipes-dir /src/tests/fixtures/devimage-recipes"
rel=/src/tests/fixtures/devimage-recipes/releases/devimage-op.toml
$wf adopt torch --from-python /opt/venv/bin/python --release $rel
# the build venv's other wheels: torch's requirements from the lock (the files the image installed)
# and setuptools' build/wheel from the wheels wheelfactory came with
# (into the default index's build-requirements directory, as `wheelfactory fetch` would fill it)
pydeps=$(python -c 'from pathlib import Path; from wheelfactory.toolchain.pydeps import DEFAULT_INDEX, pydeps_dir
print(pydeps_dir(Path("/tmp/wf"), DEFAULT_INDEX))')
mkdir -p $pydeps && for w in /deps/*.whl /wf/*.whl; do
    case $w in */torch-*) ;; *) ln -sf $w $pydeps/ ;; esac; done
$wf build --release $rel --offline --adopt torch=$(ls /tmp/wf/adopt/installed/torch/torch-*.whl) cudaop
cp /tmp/wh/wf_cuda_op-*.whl /out/
pip install -q --no-index --no-deps /tmp/wh/wf_cuda_op-*.whl
cmake -S /src/tests/fixtures/torch-cuda-op -B /tmp/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')" > /out/cmake/configure.log
cmake --build /tmp/cmake > /out/cmake/build.log
cp /tmp/cmake/libwf_cuda_op.so /out/cmake/
cat > /tmp/check.py <<'EOF'
import sys
import torch
if sys.argv[1] == "cpp_extension":
    import wf_cuda_op  # noqa: F401  (registers the op)
else:
    torch.ops.load_library(sys.argv[2])
y = torch.ops.wf_cuda_op.scale_add(torch.empty(8, device="meta"), 2.0)
assert y.shape == (8,) and y.device.type == "meta", y
assert torch._C._dispatch_has_kernel_for_dispatch_key("wf_cuda_op::scale_add", "CUDA")
print(sys.argv[1], "op ok")
EOF
cd /tmp && python check.py cpp_extension && python check.py cmake /tmp/cmake/libwf_cuda_op.so
"""


@pytest.fixture(scope="module")
def docker() -> Docker:
    return docker_or_skip()


@pytest.fixture(scope="module")
def dev_image(docker: Docker, tmp_path_factory: pytest.TempPathFactory):
    """ci-dev built (adopted), locked and its images built through the CLI; yields the wheelhouse, the
    output dir, the `images` output and the seconds each stage took; removes the images after."""
    with scratch(tmp_path_factory, "devimage") as root:
        wh, cache, out = root / "wh", root / "cache", root / "out"
        common = ["--wheelhouse", str(wh), "--cache-dir", str(cache)]
        seconds = {}
        for args in (["build", "--release", str(RELEASE)], ["lock", "--release", str(RELEASE)]):
            started = time.monotonic()
            r = run_cli(*common, *args, cwd=REPO)
            assert r.returncode == 0, f"wheelfactory {' '.join(args)}:\n{r.stdout}\n{r.stderr[-4000:]}"
            seconds[args[0]] = time.monotonic() - started
        started = time.monotonic()
        # both images (the runtime one is every layer of the dev one, so a cache hit); the closure check of
        # the dev image, which holds all the runtime's files, is a test of its own
        result = CliRunner().invoke(images, ["-r", str(RELEASE), "--output-dir", str(out), "--no-check"],
                                    obj=Factory(RECIPES, wh, cache))
        seconds["images"] = time.monotonic() - started
        assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
        print(f"ci-dev: {', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())}")
        yield Factory(RECIPES, wh, cache), out, result.output, seconds
        subprocess.run([docker.binary, "rmi", "-f", DEV, RUNTIME], capture_output=True)
        if os.environ.get("WHEELFACTORY_TEST_PRUNE_BUILD_CACHE"):
            subprocess.run([docker.binary, "builder", "prune", "-af"], capture_output=True)


@pytest.fixture(scope="module")
def built_inside(docker: Docker, dev_image, tmp_path_factory: pytest.TempPathFactory):
    """The op built inside the dev image with no network; yields the output dir and the run's output."""
    factory, _, _, _ = dev_image
    wh = factory.wheelhouse.root
    with scratch(tmp_path_factory, "devimage-use") as root:
        wf, out = root / "wf", root / "out"
        out.mkdir()
        # wheelfactory and its dependencies as wheels (here, with the network), installed inside without it
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--isolated", "--wheel-dir", str(wf),
                            str(REPO)], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        started = time.monotonic()
        r = docker.run(DEV, ["bash", "-c", IN_IMAGE], timeout=1800, options=[
            "-v", f"{REPO}:/src:ro", "-v", f"{wh}:/deps:ro", "-v", f"{wf}:/wf:ro", "-v", f"{out}:/out"])
        seconds = time.monotonic() - started
        print(f"inside the dev image: {seconds:.0f}s")
        assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
        yield out, r.stdout + r.stderr


def test_dev_image_is_the_runtime_image_plus_tooling_and_toolkit(docker: Docker, dev_image) -> None:
    _, _, output, _ = dev_image
    dev, runtime = docker.inspect(DEV), docker.inspect(RUNTIME)
    # every runtime layer is shared: the dev image only adds its tooling and toolkit layers
    assert dev["RootFS"]["Layers"][:len(runtime["RootFS"]["Layers"])] == runtime["RootFS"]["Layers"]
    assert len(dev["RootFS"]["Layers"]) == len(runtime["RootFS"]["Layers"]) + 2
    labels = dev["Config"]["Labels"]
    assert labels[f"{NS}.torch_version"] == "2.14.1" and labels[f"{NS}.nccl_version"] == "2.30.7-1"
    assert labels["org.opencontainers.image.base.name"] == "local/debian-py:bookworm"
    assert labels[f"{NS}.cuda_toolkit"].startswith("wheels:13.0:")  # the toolkit's identity
    assert labels["org.opencontainers.image.base.digest"] == docker.inspect("local/debian-py:bookworm")["Id"]
    env = dict(e.split("=", 1) for e in dev["Config"]["Env"])
    assert env["CUDA_HOME"] == "/usr/local/cuda" and env["TORCH_CUDA_ARCH_LIST"] == ARCH
    assert "network host: RUN steps install packages" in output  # the CI engine has no default bridge
    report = Assembler(dev_image[0], Settings(), dev_image[1], docker).size_report(_prepared(dev_image, "dev"))
    assert [x.name for x in report.layers] == ["system", "venv", "cuda", "torch", "stack", "tooling", "toolkit"]
    assert 0 <= report.overhead < 2.0, report.lines()


def _prepared(dev_image, variant: str) -> Prepared:
    factory, out, _, _ = dev_image
    return next(p for p in Assembler(factory, Settings(), out).prepare(str(RELEASE)) if p.spec.variant == variant)


def test_system_library_set_installed_and_closure_passes(docker: Docker, dev_image) -> None:
    """pyodbc's extension needs libodbc.so.2, which its wheel does not ship: system_libraries.toml names
    the apt package, the image installs it (the only RUN with a network), the closure check finds it."""
    factory, out, _, _ = dev_image
    asm = Assembler(factory, Settings(), out, docker)
    p = _prepared(dev_image, "dev")
    assert [(name, pkgs) for name, _, pkgs in p.system if name == "pyodbc"] == [("pyodbc", ("libodbc2",))]
    report = asm.check_closure(p)
    assert report.ok, [str(e) for e in report.errors]
    assert report.checked > 1000
    r = docker.run(RUNTIME, ["python", "-c", "import pyodbc; print(pyodbc.version)"])
    assert r.returncode == 0 and r.stdout.strip() == "5.5.0", r.stderr[-2000:]
    # without the system library the same check fails: the package really needs it
    r = docker.run(RUNTIME, ["sh", "-c", "rm /usr/lib/x86_64-linux-gnu/libodbc.so.2* && "
                                         "python -c 'import pyodbc'"], options=["--user", "0"])
    assert r.returncode != 0 and "libodbc.so.2" in r.stderr


def test_toolkit_links_the_venvs_cuda_instead_of_copying_it(docker: Docker, dev_image) -> None:
    script = ("readlink -f /usr/local/cuda/lib64/libcudart.so /usr/local/cuda/include/cusparse.h && "
              "test ! -L /usr/local/cuda/bin/nvcc && nvcc --version | tail -2 && "
              "python -c 'import torch; print(torch.version.cuda, torch.cuda.is_available())'")
    r = docker.run(DEV, ["bash", "-c", script])
    assert r.returncode == 0, r.stderr[-3000:]
    site = "/opt/venv/lib/python3.11/site-packages/nvidia/cu13"
    lines = r.stdout.splitlines()
    assert lines[0] == f"{site}/lib/libcudart.so.13" and lines[1] == f"{site}/include/cusparse.h"
    assert "release 13.0" in r.stdout and lines[-1] == "13.0 False"  # no GPU here


def test_cuda_op_built_inside_offline_both_ways(built_inside) -> None:
    out, log = built_inside
    assert "cpp_extension op ok" in log and "cmake op ok" in log
    devices = audit.target_devices([ARCH])
    [wheel] = out.glob("wf_cuda_op-0.1.0-*.whl")
    verdict = audit.judge(audit.audit_wheel(wheel), [ARCH])
    assert verdict.ok and [o.path for o in verdict.objects] == ["wf_cuda_op/_C.cpython-311-x86_64-linux-gnu.so"]
    with zipfile.ZipFile(wheel) as zf:
        assert any(n.endswith(".dist-info/wheelfactory.json") for n in zf.namelist())  # the factory's provenance
    so = out / "cmake" / "libwf_cuda_op.so"
    obj = audit.ObjectCode.from_entries(str(so), fatbin.read_elf_path(so))
    assert "sm_121a" in obj.sizes, obj.sizes
    assert audit.judge_object(obj, devices).status == audit.NATIVE
