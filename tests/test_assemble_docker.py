"""Real images of the CI release and a sibling that differs only in transformers, built with Docker.

The wheelhouse is the session's CI wheelhouse (tests/conftest.py: built and locked through the CLI,
or reused from WHEELFACTORY_TEST_WHEELHOUSE).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from assemble.assembler import Assembler
from assemble.cli import images
from assemble.docker import Docker
from assemble.spec import Settings
from wheelfactory.pipeline.factory import Factory

from .conftest import CI_RELEASES, RECIPES, docker_or_skip

pytestmark = [pytest.mark.docker, pytest.mark.slow]
NS = "dev.wheelfactory"
T4 = "wheelfactory-ci/vllm:0.14.1-t4"
T5 = "wheelfactory-ci/vllm:0.14.1-t5"
BROKEN = "wheelfactory-ci/broken:1"
NCCL_CHECK = ("import ctypes, glob, os, nvidia.nccl; "
              "lib = ctypes.CDLL(glob.glob(os.path.join(list(nvidia.nccl.__path__)[0], 'lib', 'libnccl.so.2'))[0]); "
              "v = ctypes.c_int(); assert lib.ncclGetVersion(ctypes.byref(v)) == 0; print('nccl', v.value)")


PYC_NOT_IN_RECORD = """
import csv, pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
listed = {str((site / row[0]).resolve()) for rec in site.glob("*.dist-info/RECORD") for row in csv.reader(open(rec))}
for pyc in site.rglob("*.pyc"):
    if str(pyc.resolve()) not in listed and not pyc.is_relative_to(site / "pip"):
        print(pyc)
"""


@pytest.fixture(scope="module")  # torn down with this (slow) module, never in a hermetic test's teardown
def docker() -> Docker:
    return docker_or_skip()


@pytest.fixture(scope="module")
def built(docker: Docker, ci_wheelhouse, tmp_path_factory: pytest.TempPathFactory):
    """Both images (ci and ci-t5, from the session's CI wheelhouse) built through the `images` command;
    yields the factory, the output dir, the sibling's ref and the command's output, then removes them."""
    wh, cache = ci_wheelhouse
    factory = Factory(RECIPES, wh, cache)
    out = tmp_path_factory.mktemp("images")
    result = CliRunner().invoke(images, ["-r", str(CI_RELEASES / "ci.toml"), "-r", str(CI_RELEASES / "ci-t5.toml"),
                                         "--output-dir", str(out)], obj=factory)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    yield factory, out, T5, result.output
    subprocess.run([docker.binary, "rmi", "-f", T4, T5, BROKEN], capture_output=True)
    if os.environ.get("WHEELFACTORY_TEST_PRUNE_BUILD_CACHE"):
        # CI's machine is thrown away after the run and its disk is small: the build cache these images
        # left (GBs, with the untagged images it pins, kept until the engine is pruned) goes too. Not by
        # default: it is the whole cache.
        subprocess.run([docker.binary, "builder", "prune", "-af"], capture_output=True)


def test_imports_and_nccl_without_network(docker: Docker, built) -> None:
    r = docker.run(T4, ["python", "-c", "import vllm, flashinfer, torch; print('ok', torch.__version__)"])
    assert r.returncode == 0 and "ok 2.13.0" in r.stdout, r.stderr[-2000:]
    r = docker.run(T4, ["python", "-c", NCCL_CHECK])
    assert r.returncode == 0 and r.stdout.startswith("nccl "), r.stderr[-2000:]


def test_runs_as_a_non_root_user_and_root_on_request(docker: Docker, built) -> None:
    r = docker.run(T4, ["sh", "-c", "id -u; id -un; echo $HOME; touch $HOME/.cache-probe"])
    assert r.returncode == 0 and r.stdout.split() == ["1000", "vllm", "/home/vllm"], r.stderr
    assert docker.run(T4, ["id", "-u"], options=["--user", "root"]).stdout.strip() == "0"


def test_entrypoint_gate_and_rdma_core_in_the_ci_image(docker: Docker, built) -> None:
    # no GPU here: the driver gate says nothing and runs the command; NCCL's rdma-core loads
    r = docker.run(T4, ["python", "-c", "import ctypes; [ctypes.CDLL(n) for n in ('libibverbs.so.1', "
                                        "'libmlx5.so.1', 'librdmacm.so.1')]; print('rdma ok')"])
    assert r.returncode == 0 and r.stdout == "rdma ok\n" and r.stderr == "", r.stderr[-2000:]
    config = docker.inspect(T4)["Config"]
    assert config["Entrypoint"][-1] == "/opt/wheelfactory/entrypoint.py" and config["Cmd"] == ["vllm", "serve"]
    assert config["Labels"][f"{NS}.min_driver"] == "580" and "WHEELFACTORY_MIN_DRIVER=580" in config["Env"]


def test_labels_say_what_is_inside(docker: Docker, built) -> None:
    labels = docker.inspect(T4)["Config"]["Labels"]
    assert labels[f"{NS}.vllm_version"] == "0.14.1" and labels[f"{NS}.torch_version"] == "2.13.0"
    assert labels[f"{NS}.transformers_version"] == "4.57.6" and labels[f"{NS}.nccl_version"] == "2.29.2-1"
    assert labels[f"{NS}.cuda_version"] == "13.0" and labels[f"{NS}.flashinfer_version"] == "0.6.2"
    assert labels["org.opencontainers.image.version"] == "0.14.1-t4" and labels["org.opencontainers.image.created"]
    # a local base has no registry digest: its image ID names the base it was built on
    assert labels["org.opencontainers.image.base.name"] == "local/debian-py:bookworm"
    assert labels["org.opencontainers.image.base.digest"] == docker.inspect("local/debian-py:bookworm")["Id"]
    for component in ("nccl", "torch", "flashinfer", "vllm"):
        assert len(labels[f"{NS}.{component}_build_key"]) == 64
    r = docker.run(T4, ["python", "-c", "import transformers; print(transformers.__version__)"])
    assert r.stdout.strip() == "4.57.6"


def test_no_wheels_caches_or_pyc_left(docker: Docker, built) -> None:
    # the base's own files (Debian's python-wheels, its .pyc) are not the assembler's
    script = "find / -xdev \\( -name '*.whl' -o -path '*/.cache/pip*' \\) -not -path '/usr/share/python-wheels/*'"
    r = docker.run(T4, ["sh", "-c", script], options=["--user", "0"])  # every directory, /root included
    assert r.returncode == 0 and r.stdout == "", r.stdout
    # .pyc files no installed RECORD lists (a wheel may ship a few; pip's own come from ensurepip)
    r = docker.run(T4, ["python", "-B", "-c", PYC_NOT_IN_RECORD])  # -B: the check itself writes none
    assert r.returncode == 0 and r.stdout == "", r.stdout


def test_siblings_share_all_layers_but_transformers(docker: Docker, built) -> None:
    _, _, sib, output = built
    ours, theirs = (docker.inspect(ref)["RootFS"]["Layers"] for ref in (T4, sib))
    assert len(ours) == len(theirs) and ours[:-1] == theirs[:-1] and ours[-1] != theirs[-1]
    assert f"shared with {sib}" in output


def test_size_report_overhead_under_two_percent(docker: Docker, built) -> None:
    factory, out, _, _ = built
    asm = Assembler(factory, Settings(), out, docker)
    [p] = asm.prepare(str(CI_RELEASES / "ci.toml"))
    report = asm.size_report(p)
    # system: rdma-core for NCCL (the stand-in nvidia-nccl-cu13), system_libraries.toml; user: the vLLM user
    # the user comes before the wheel layers, so that siblings share it (test_siblings_share_...)
    assert [x.name for x in report.layers] == ["system", "user", "venv", "cuda", "torch", "stack", "transformers"]
    assert report.installed > 2e9 and 0 <= report.overhead < 2.0, report.lines()


def test_closure_check_passes_and_fails_on_a_missing_library(docker: Docker, built, tmp_path: Path) -> None:
    factory, out, _, _ = built
    asm = Assembler(factory, Settings(), out, docker)
    [p] = asm.prepare(str(CI_RELEASES / "ci.toml"))
    assert asm.check_closure(p).ok
    # A broken image: torch's bundled OpenMP runtime removed.
    (tmp_path / "Dockerfile").write_text(f"FROM {T4}\nUSER root\nRUN find /opt/venv -name 'libgomp*.so*' -delete\n")
    r = subprocess.run([docker.binary, "build", "--network=none", "-t", BROKEN, str(tmp_path)],
                       env=dict(os.environ, DOCKER_BUILDKIT="1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    p.spec = type(p.spec)(**{**p.spec.__dict__, "repository": "wheelfactory-ci/broken", "tag": "1"})
    report = asm.check_closure(p)
    assert not report.ok and any("libgomp" in e.needed and "found nowhere" in e.detail for e in report.errors)


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed")
def test_generated_dockerfiles_lint_clean(built) -> None:
    _, out, _, _ = built
    for dockerfile in out.glob("*/*.Dockerfile"):
        r = subprocess.run(["hadolint", "--no-color", "--ignore", "DL3008", str(dockerfile)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout


