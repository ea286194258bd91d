"""Cross builds (wheelfactory/toolchain/crossbuild.py), fast and hermetic: the per-step mode decision, what it
does to keys and to `plan`, the cross CUDA root and the toolchain file and environment a cross step
gets, NCCL's make command, and the host check for the cross compilers. The real cross-compiles are
in tests/test_cross_build.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import wheelfactory.cli.app
from tests.conftest import CI_RELEASES, RECIPES, SPARK, invoke
from wheelfactory.core.errors import InputError
from wheelfactory.host.doctor import FAIL, OK, Probe, check_cross
from wheelfactory.host.facts import Host
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning.plan import BuildHost
from wheelfactory.planning.recipe import load_recipe_module
from wheelfactory.toolchain import crossbuild
from wheelfactory.toolchain.crossbuild import CROSS, EMULATED, NATIVE, CrossToolchain, assemble_cross_root, step_mode

X86 = Host(platform="linux_x86_64", cuda_home="/usr/local/cuda", toolkit="13.0", cpus=2, mem_available_gb=20.0)


def _x86_factory(tmp_path: Path, **kwargs) -> Factory:
    return Factory(RECIPES, tmp_path / "wheelhouse", tmp_path / "cache", host_probe=lambda: X86, **kwargs)


# -- the decision ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("building", "host", "target", "cross", "recipe_cross", "want"), [
    (False, "x86_64", "aarch64", True, True, None),  # adopted: nothing runs
    (True, "aarch64", "aarch64", False, False, NATIVE),  # on the Spark itself
    (True, "aarch64", "aarch64", True, False, NATIVE),  # --cross on the target's own machine: nothing to cross
    (True, "x86_64", "aarch64", False, True, NATIVE),  # no --cross: wheels for this host, as before
    (True, "x86_64", "aarch64", True, True, CROSS),
    (True, "x86_64", "aarch64", True, False, EMULATED),
])
def test_step_mode(building, host, target, cross, recipe_cross, want):
    assert step_mode(building=building, host_machine=host, target_machine=target, cross=cross,
                     recipe_cross=recipe_cross) == want


def test_which_shipped_recipes_cross_build():
    # Said in README's "Cross builds": NCCL and vLLM cross-compile; torch, Triton (and the rest) do not.
    crossing = {p.stem for p in RECIPES.glob("*.py") if not p.stem.startswith("_") and load_recipe_module(p).cross}
    assert crossing == {"nccl", "vllm"}
    assert set(crossbuild.NATIVE_ONLY) == {"torch", "triton"}


# -- the plan --------------------------------------------------------------------------------------

def test_cross_plan_modes_platform_and_keys(tmp_path):
    cross = _x86_factory(tmp_path, cross=True)
    release = cross.release("0.33.0-t5")
    plan = cross.plan(release)
    assert plan.target.platform == "linux_aarch64"
    modes = {s.component: s.mode for s in plan.steps}
    assert modes["nccl"] == modes["vllm"] == CROSS
    assert modes["torch"] == modes["flashinfer"] == modes["torchvision"] == EMULATED
    assert modes["triton"] is None  # adopted from its official wheel in this release
    nccl = plan.step("nccl")
    aarch64_cudart = cross.cross_setup(release).toolkit.pin("nvidia-cuda-runtime")
    assert nccl.key_inputs["build"] == {"mode": "cross", "host": "x86_64", "compiler": "aarch64-linux-gnu-g++",
                                        "target_cuda": plan.build_host.cross_cuda}
    assert plan.build_host.cross_cuda.startswith("wheels:13.1.0:")
    assert aarch64_cudart.sha256 == "5f1aa8fd779cae1a78aa8fdbaa5e4f245300baff120099d9b5ee84e3f4506a29"
    # The same step planned on the Spark itself is native, keyed without a build entry, and another key.
    native = Factory(RECIPES, tmp_path / "wheelhouse", tmp_path / "cache", host_probe=lambda: SPARK).plan(release)
    assert native.step("nccl").mode == NATIVE and "build" not in native.step("nccl").key_inputs
    assert native.step("nccl").key != nccl.key
    # Without --cross, this host builds for itself, natively.
    here = _x86_factory(tmp_path).plan(release)
    assert here.target.platform == "linux_x86_64"
    assert {s.mode for s in here.steps} == {NATIVE, None}
    assert here.build_host == BuildHost("x86_64")


def test_a_native_key_is_the_key_without_a_build_host(tmp_path):
    """Planning with the target's own machine as build host changes no key: every key from before
    cross builds stays what it was."""
    from wheelfactory.planning.plan import plan_release
    f = Factory(RECIPES, tmp_path / "wheelhouse", tmp_path / "cache", host_probe=lambda: SPARK)
    release = f.release("0.33.0-t5")
    target = f.plan(release).target
    without = plan_release(release, f.recipes, target)
    with_host = plan_release(release, f.recipes, target, build_host=BuildHost("aarch64", "wheels:x"))
    assert [s.key for s in without.steps] == [s.key for s in with_host.steps]


def test_target_cuda_directory_is_keyed_as_a_directory(tmp_path):
    libs = tmp_path / "aarch64-cuda"
    (libs / "lib64").mkdir(parents=True)
    plan = _x86_factory(tmp_path, cross=True, target_cuda=libs).plan(_x86_factory(tmp_path).release(
        str(CI_RELEASES / "cross-nccl.toml")))
    assert plan.step("nccl").key_inputs["build"]["target_cuda"] == "directory"
    assert plan.target.platform == "linux_aarch64"


def test_target_cuda_bad_input(tmp_path):
    release = _x86_factory(tmp_path).release(str(CI_RELEASES / "cross-nccl.toml"))
    with pytest.raises(InputError, match="--target-cuda .*only a cross build uses it; add --cross"):
        _x86_factory(tmp_path, target_cuda=tmp_path).plan(release)
    with pytest.raises(InputError, match="--target-cuda .*nowhere: not a directory"):
        _x86_factory(tmp_path, cross=True, target_cuda=tmp_path / "nowhere").plan(release)


def test_emulated_steps_stop_a_cross_build_before_any_work(tmp_path):
    f = _x86_factory(tmp_path, cross=True)
    plan = f.plan(f.release("0.33.0-t5"), ["vllm"])
    with pytest.raises(InputError) as e:
        f.executor(plan, echo=lambda s: None)
    emulated, vllm = str(e.value).splitlines()
    assert emulated.startswith("torch, flashinfer cannot cross-compile for linux_aarch64")
    assert crossbuild.NATIVE_ONLY["torch"] in emulated
    assert "--adopt" in emulated
    assert vllm.startswith("vllm cross-compiles its kernels, and its build also needs the linux_aarch64 wheels of "
                           "torch in its build venv")


def test_a_cross_step_without_target_dependencies_runs(tmp_path):
    """NCCL alone passes the checks (its recipe cross-compiles and its build venv needs no target wheels);
    with torch adopted, vLLM still stops: its build needs the target's torch, and so does FlashInfer's."""
    f = _x86_factory(tmp_path, cross=True)
    assert crossbuild.cross_blockers(f.plan(f.release("0.33.0-t5"), ["nccl"]).steps, "linux_aarch64") == []
    plan = f.plan(f.release("0.33.0-t5-fast"), ["vllm"])
    assert {s.component: s.mode for s in plan.steps} == {"nccl": CROSS, "torch": None, "triton": None,
                                                         "flashinfer": EMULATED, "vllm": CROSS}
    blockers = crossbuild.cross_blockers(plan.steps, plan.target.platform)
    assert [b.split(" ", 1)[0] for b in blockers] == ["flashinfer", "vllm"]


class _X86Factory(Factory):
    """The CLI's factory on a fixed x86_64 host (the CLI makes its own Factory)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs | {"host_probe": lambda: X86})


def test_plan_cli_shows_modes_and_json(tmp_path, monkeypatch):
    monkeypatch.setattr(wheelfactory.cli.app, "Factory", _X86Factory)
    base = ("--cache-dir", str(tmp_path / "c"), "--wheelhouse", str(tmp_path / "w"), "plan", "--release", "0.33.0-t5")
    r = invoke(*base, "--cross")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "cross build on x86_64 for aarch64" in lines[1]
    assert any(line.split()[1:4] == ["build", "cross", "nccl"] for line in lines)
    assert any(line.split()[1:4] == ["build", "emulated", "torch"] for line in lines)
    r = invoke(*base, "--cross", "--json")
    data = json.loads(r.stdout)
    assert data["format_version"] == 3
    assert data["build_host"] == {"machine": "x86_64", "cross": True}
    assert {s["component"]: s["mode"] for s in data["steps"]}["vllm"] == "cross"
    r = invoke(*base, env={"WHEELFACTORY_CROSS": ""})
    assert "(--cross builds them for linux_aarch64)" in r.stdout
    assert json.loads(invoke(*base, "--json").stdout)["build_host"] == {"machine": "x86_64", "cross": False}


# -- the toolchain a cross step gets -----------------------------------------------------------------

def _fake_toolkits(tmp_path: Path) -> tuple[Path, Path]:
    host = tmp_path / "host-cuda"
    (host / "bin" / "crt").mkdir(parents=True)
    for name in ("nvcc", "ptxas", "nvcc.profile"):
        (host / "bin" / name).write_text(name)
    (host / "include").mkdir()
    (host / "include" / "cuda_runtime.h").write_text("/* */")
    (host / "nvvm" / "bin").mkdir(parents=True)
    target = tmp_path / "aarch64-cuda"
    (target / "lib64").mkdir(parents=True)
    (target / "lib64" / "libcudart.so.13").write_text("aarch64 cudart")
    return host, target


def test_cross_root_layout(tmp_path):
    host, target = _fake_toolkits(tmp_path)
    root = assemble_cross_root(host, target / "lib64", tmp_path / "work" / "cross-cuda", "aarch64")
    # bin/ is a directory of its own (nvcc's TOP is bin/..), each entry a link to the host's.
    assert (root / "bin").is_dir() and not (root / "bin").is_symlink()
    assert (root / "bin" / "nvcc").is_symlink() and (root / "bin" / "nvcc").resolve() == (host / "bin" / "nvcc")
    assert (root / "bin" / "crt").resolve() == host / "bin" / "crt"
    assert (root / "include").resolve() == host / "include"
    # nvcc -ccbin aarch64-linux-gnu-g++ reads targets/aarch64-linux; FindCUDAToolkit, targets/sbsa-linux.
    for libdir in ("targets/aarch64-linux/lib", "targets/sbsa-linux/lib", "lib64", "lib"):
        assert (root / libdir / "libcudart.so.13").read_text() == "aarch64 cudart", libdir
    assert (root / "targets" / "aarch64-linux" / "include" / "cuda_runtime.h").exists()
    # Made again from scratch (a resumed step): links only, the toolkits untouched.
    (root / "stray").write_text("x")
    again = assemble_cross_root(host, target / "lib64", root, "aarch64")
    assert not (again / "stray").exists() and (host / "bin" / "nvcc").read_text() == "nvcc"


def test_cross_root_bad_input(tmp_path):
    host, target = _fake_toolkits(tmp_path)
    with pytest.raises(InputError, match="no bin/nvcc"):
        assemble_cross_root(target, target / "lib64", tmp_path / "r", "aarch64")
    with pytest.raises(InputError, match="not a directory of the target's CUDA libraries"):
        assemble_cross_root(host, target / "lib", tmp_path / "r", "aarch64")
    with pytest.raises(InputError, match="no lib64/ or lib/"):
        crossbuild.target_lib_dir(tmp_path / "empty")


def test_toolchain_file_and_environment(tmp_path):
    host, target = _fake_toolkits(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    site = work / "venv" / "lib" / "python3.11" / "site-packages"
    toolchain, path = crossbuild.prepare_toolchain(host, target, work, "aarch64", site)
    text = path.read_text()
    lines = text.splitlines()
    root = work / "cross-cuda"
    for want in ("set(CMAKE_SYSTEM_NAME Linux)", "set(CMAKE_SYSTEM_PROCESSOR aarch64)",
                 "set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)", "set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)",
                 f'set(CMAKE_CUDA_COMPILER "{root}/bin/nvcc")', "set(CMAKE_CUDA_HOST_COMPILER aarch64-linux-gnu-g++)",
                 f'set(CUDAToolkit_ROOT "{root}")', "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
                 "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)"):
        assert want in lines, want
    [roots] = [line for line in lines if line.startswith("set(CMAKE_FIND_ROOT_PATH ")]
    assert f'"{root}/targets/aarch64-linux"' in roots
    assert f'"{site}/torch/share/cmake"' in roots
    assert f'  list(PREPEND CMAKE_PREFIX_PATH "{site}/torch/share/cmake")' in lines
    env = toolchain.environment(path)
    assert env["CC"] == "aarch64-linux-gnu-gcc" and env["CXX"] == env["CUDAHOSTCXX"] == "aarch64-linux-gnu-g++"
    assert env["CMAKE_TOOLCHAIN_FILE"] == str(path)
    assert env["CUDA_HOME"] == env["CUDAToolkit_ROOT"] == str(root) and env["CUDACXX"] == f"{root}/bin/nvcc"
    assert env["_PYTHON_HOST_PLATFORM"] == "linux-aarch64"
    assert toolchain.strip == "aarch64-linux-gnu-strip"


def test_toolchain_file_quotes_paths():
    toolchain = CrossToolchain("aarch64", Path('/tmp/a "b"/root'))
    assert 'set(CUDAToolkit_ROOT "/tmp/a \\"b\\"/root")' in toolchain.cmake_toolchain().splitlines()


def test_nccl_make_command_native_and_cross():
    nccl = load_recipe_module(RECIPES / "nccl.py").module
    env = {"NVCC_GENCODE": "-gencode=arch=compute_121,code=sm_121"}
    native = SimpleNamespace(jobs=4, env=env, cuda_home="/cuda", cross=None)
    assert nccl._make_command(native, Path("/b")) == ["make", "-j4", "src.build", "BUILDDIR=/b",
                                                      "NVCC_GENCODE=-gencode=arch=compute_121,code=sm_121",
                                                      "CUDA_HOME=/cuda"]
    cross = SimpleNamespace(jobs=4, env=env, cuda_home="/w/cross-cuda",
                            cross=CrossToolchain("aarch64", Path("/w/cross-cuda")))
    cmd = nccl._make_command(cross, Path("/b"))
    assert cmd[-2:] == ["CUDA_HOME=/w/cross-cuda", "CXX=aarch64-linux-gnu-g++"]


# -- the host check ---------------------------------------------------------------------------------

def test_host_check_for_the_cross_compilers(tmp_path):
    plan = _x86_factory(tmp_path, cross=True).plan(_x86_factory(tmp_path).release("0.33.0-t5"), ["nccl"])
    steps = list(plan.steps)
    none = Probe(which=lambda name: None)
    [check] = check_cross(steps, "aarch64", none)
    assert check.level == FAIL
    assert check.message == ("nccl cross-compiles for aarch64 and aarch64-linux-gnu-gcc, aarch64-linux-gnu-g++, "
                             "aarch64-linux-gnu-strip are not on PATH: install them: apt-get install "
                             "g++-aarch64-linux-gnu gcc-aarch64-linux-gnu (Debian, Ubuntu)")
    [check] = check_cross(steps, "aarch64", Probe(which=lambda name: f"/usr/bin/{name}"))
    assert check.level == OK
    native = _x86_factory(tmp_path).plan(_x86_factory(tmp_path).release("0.33.0-t5"), ["nccl"])
    assert check_cross(list(native.steps), "x86_64", none) == []


def test_build_cli_stops_before_any_work(tmp_path, monkeypatch):
    """Exit 2 naming the steps, before a source is resolved or anything is downloaded (the fast tier
    refuses network and processes, so reaching either would fail this test)."""
    monkeypatch.setattr(wheelfactory.cli.app, "Factory", _X86Factory)
    r = invoke("--cache-dir", str(tmp_path / "c"), "--wheelhouse", str(tmp_path / "w"), "build", "--release",
               "0.33.0-t5", "--cross", "vllm")
    assert r.returncode == 2
    assert "torch, flashinfer cannot cross-compile for linux_aarch64" in r.stderr
    assert "vllm cross-compiles its kernels" in r.stderr
    assert not (tmp_path / "c" / "logs" / "resolve.log").exists()  # no source was resolved
