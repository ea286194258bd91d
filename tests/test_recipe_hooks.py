"""Recipe hooks run against a recording runner: the commands and source edits they would make,
checked without building anything (the real builds take hours on a Spark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning.context import BuildContext
from wheelfactory.run.runner import Runner
from wheelfactory.store.wheelpack import pack_tree

from .conftest import RECIPES, SPARK


class RecordingRunner(Runner):
    """Records commands instead of running them; `python -m build` leaves a wheel in --outdir."""

    def __init__(self, log_path: Path, make_wheel=None):
        super().__init__("rec", log_path, base_env={})
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.make_wheel = make_wheel

    def run(self, cmd, *, cwd=None, env=None, capture=False, check=True):
        argv = [str(c) for c in cmd]
        self.calls.append((argv, dict(env or {})))
        if "build" in argv and "--outdir" in argv and self.make_wheel:
            self.make_wheel(Path(argv[argv.index("--outdir") + 1]))
        return ""


def load(name):
    spec = importlib.util.spec_from_file_location(f"hooks_{name}", RECIPES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def make_ctx(tmp_path):
    f = Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK)
    plan = f.plan(f.release("0.15.0-t4"))
    versions = {n: c.version for n, c in plan.release.components.items()} | dict(plan.pins)

    def make(component: str, make_wheel=None, jobs: int = 4) -> BuildContext:
        work = tmp_path / component
        (work / "src").mkdir(parents=True)
        (work / "dist").mkdir()
        site = work / "venv" / "lib" / "python3.12" / "site-packages"
        site.mkdir(parents=True)
        runner = RecordingRunner(work / "log.txt", make_wheel)
        step = plan.step(component)
        return BuildContext(step, plan.target, work / "src", work, work / "dist", work / "venv", "/usr/local/cuda",
                            jobs, dict(step.env), runner, False, tmp_path / "cache", versions, SPARK.cpus)
    return make


def wheel_maker(dist: str, version: str, files: dict[str, str], requires=()):
    def make(outdir: Path) -> None:
        tree = outdir.parent / f"tree-{dist}"
        for rel, text in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_text(text)
        pack_tree(tree, dist, version, "cp312-cp312-linux_aarch64", outdir, summary="recorded", requires=requires)
    return make


CUDA_TXT = """# Common dependencies
-r common.txt

numba == 0.61.2
ray[cgraph]>=2.48.0
flashinfer-python==0.6.1
"""


def test_vllm_prepare_pins_the_factory_packages(make_ctx):
    ctx = make_ctx("vllm")
    (ctx.src / "requirements").mkdir()
    (ctx.src / "requirements" / "cuda.txt").write_text(CUDA_TXT)
    load("vllm").prepare(ctx)
    argv, _ = ctx.runner.calls[0]
    assert argv[-1] == "use_existing_torch.py"
    text = (ctx.src / "requirements" / "cuda.txt").read_text()
    assert "flashinfer-python==0.6.2" in text and "flashinfer-python==0.6.1" not in text
    assert "torch==2.10.0" in text and "torchvision==0.25.0" in text and "torchaudio==2.10.0" in text
    assert "edit requirements/cuda.txt" in ctx.runner.log_path.read_text()


def test_vllm_prepare_fails_loudly_when_upstream_moved_the_line(make_ctx):
    ctx = make_ctx("vllm")
    (ctx.src / "requirements").mkdir()
    (ctx.src / "requirements" / "cuda.txt").write_text("-r common.txt\n")  # no flashinfer line any more
    with pytest.raises(BuildError, match="matched nothing; upstream changed this file"):
        load("vllm").prepare(ctx)


def test_vllm_build_sizes_max_jobs_and_nvcc_threads_together(make_ctx):
    ctx = make_ctx("vllm", wheel_maker("vllm", "0.15.0", {"vllm/__init__.py": ""}), jobs=4)
    ctx.runner.log_path.write_text("-- Building NVFP4 for archs: 12.0f\n")
    wheels = load("vllm").build(ctx)
    argv, env = ctx.runner.calls[-1]
    assert argv[1:5] == ["-m", "build", "--wheel", "--no-isolation"]
    assert env["NVCC_THREADS"] == "4" and env["MAX_JOBS"] == "16"  # 20 CPUs, 4 memory-bound processes
    assert [w.name for w in wheels] == ["vllm-0.15.0-cp312-cp312-linux_aarch64.whl"]


def test_vllm_build_fails_when_cmake_skipped_nvfp4(make_ctx):
    ctx = make_ctx("vllm", wheel_maker("vllm", "0.15.0", {"vllm/__init__.py": ""}))
    ctx.runner.log_path.write_text("-- Not building NVFP4 as no compatible archs were found.\n")
    with pytest.raises(BuildError, match="NVFP4"):
        load("vllm").build(ctx)


def test_torch_prepare_links_unversioned_nccl_and_build_sets_rpaths(make_ctx):
    ctx = make_ctx("torch", wheel_maker("torch", "2.10.0", {"torch/__init__.py": "",
                                                            "torch/lib/libtorch_cuda.so": "elf",
                                                            "torch/lib/libc10_cuda.so": "elf"}))
    mod = load("torch")
    mod.prepare(ctx)
    argv, _ = ctx.runner.calls[0]
    assert argv[:3] == ["ln", "-sf", "libnccl.so.2"] and argv[3].endswith("site-packages/nvidia/nccl/lib/libnccl.so")
    mod.build(ctx)
    patched = [c[0] for c in ctx.runner.calls if c[0][0] == "patchelf"]
    assert {Path(a[-1]).name for a in patched} == {"libtorch_cuda.so", "libc10_cuda.so"}
    assert all(a[1:3] == ["--force-rpath", "--add-rpath"] and "$ORIGIN/../../nvidia/nccl/lib" in a[3] for a in patched)


def test_torchvision_wheel_must_pin_the_factory_torch(make_ctx):
    good = make_ctx("torchvision", wheel_maker("torchvision", "0.25.0", {"torchvision/__init__.py": ""},
                                               requires=["torch==2.10.0"]))
    assert load("torchvision").build(good)
    bad = make_ctx("torchaudio", wheel_maker("torchaudio", "2.10.0", {"torchaudio/__init__.py": ""},
                                             requires=["torch"]))
    with pytest.raises(BuildError, match="would accept another torch"):
        load("torchaudio").build(bad)


def test_flashinfer_builds_aot_packages_only_when_asked(make_ctx):
    ctx = make_ctx("flashinfer", wheel_maker("flashinfer-python", "0.6.2", {"flashinfer/__init__.py": ""}))
    load("flashinfer").build(ctx)
    builds = [c[0] for c in ctx.runner.calls if "--outdir" in c[0]]
    assert len(builds) == 1 and builds[0][-1] == str(ctx.src)


class FakeMake(RecordingRunner):
    """`make src.build BUILDDIR=...` leaves what NCCL's makefile would: lib/libnccl.so.2 (a link to
    the versioned file, as upstream's) and include/nccl.h."""

    def run(self, cmd, **kwargs):
        out = super().run(cmd, **kwargs)
        argv = [str(c) for c in cmd]
        if argv[0] == "make":
            builddir = Path(next(a for a in argv if a.startswith("BUILDDIR=")).split("=", 1)[1])
            (builddir / "lib").mkdir(parents=True)
            (builddir / "include").mkdir()
            (builddir / "lib" / "libnccl.so.2.29.2").write_bytes(b"\x7fELF fake nccl")
            (builddir / "lib" / "libnccl.so.2").symlink_to("libnccl.so.2.29.2")
            (builddir / "include" / "nccl.h").write_text("#define NCCL_MAJOR 2\n")
        return out


def test_nccl_build_command_and_wheel(make_ctx):
    import zipfile

    ctx = make_ctx("nccl")
    ctx.runner = FakeMake(ctx.runner.log_path)
    ctx.env["NVCC_GENCODE"] = "-gencode=arch=compute_121,code=sm_121"
    [wheel] = load("nccl").build(ctx)
    argv, _ = ctx.runner.calls[0]
    assert argv[0] == "make" and argv[1] == "-j4" and "src.build" in argv
    assert "NVCC_GENCODE=-gencode=arch=compute_121,code=sm_121" in argv and "CUDA_HOME=/usr/local/cuda" in argv
    # The name torch's Requires-Dist asks for, the release's 2.29.2-1 as 2.29.2 plus a local label
    # naming the build, for the target's platform.
    assert wheel.name == f"nvidia_nccl_cu13-2.29.2+wf.{ctx.step.key[:8]}-py3-none-linux_aarch64.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read("nvidia/nccl/lib/libnccl.so.2") == b"\x7fELF fake nccl"  # the real file, not a link
    assert "nvidia/nccl/include/nccl.h" in names


def test_flashinfer_cubin_refuses_offline(make_ctx):
    import dataclasses

    ctx = make_ctx("flashinfer", wheel_maker("flashinfer-python", "0.6.2", {"flashinfer/__init__.py": ""}))
    ctx.step = dataclasses.replace(ctx.step, options=dict(ctx.step.options, cubin=True))
    ctx.offline = True
    with pytest.raises(BuildError, match="--offline forbids"):
        load("flashinfer").build(ctx)


def test_vllm_configure_runs_cmake_as_setup_py_does_and_checks_device_code(make_ctx):
    ctx = make_ctx("vllm", jobs=4)
    ctx.env = dict(ctx.env) | {"FETCHCONTENT_BASE_DIR": str(ctx.work / "_deps"), "CUDA_HOME": "/opt/cuda-13.1",
                               "CMAKE_ARGS": "-DFOO=1 -DBAR=2"}
    echoed = []
    ctx.echo = echoed.append
    (ctx.work / "cmake-configure").mkdir()
    (ctx.work / "cmake-configure" / "build.ninja").write_text(
        "build CMakeFiles/_C.dir/csrc/cache_kernels.cu.o: CUDA_COMPILER___C_unscanned_Release /s/c.cu\n"
        "  FLAGS = -O3 -gencode arch=compute_121a,code=sm_121a\n")
    load("vllm").configure(ctx)
    cmake = next(argv for argv, _ in ctx.runner.calls if argv[0] == "cmake")
    assert cmake[1:4] == [str(ctx.src), "-G", "Ninja"]
    assert "-DVLLM_TARGET_DEVICE=cuda" in cmake and "-DCMAKE_BUILD_TYPE=Release" in cmake
    assert f"-DVLLM_PYTHON_EXECUTABLE={ctx.python}" in cmake
    assert f"-DFETCHCONTENT_BASE_DIR={ctx.work / '_deps'}" in cmake
    assert "-DCMAKE_JOB_POOLS:STRING=compile=4" in cmake and "-DNVCC_THREADS=4" in cmake  # 20 CPUs / 4 jobs
    assert "-DCMAKE_CUDA_COMPILER=/opt/cuda-13.1/bin/nvcc" in cmake
    assert cmake[-2:] == ["-DFOO=1", "-DBAR=2"]
    assert ctx.device_code["families"][0]["verdicts"] == {"12.1": {"native": 1, "jit": 0, "none": 0}}
    assert "device code the build will compile" in echoed[0]


def test_vllm_configure_fails_on_code_a_gb10_cannot_load(make_ctx):
    ctx = make_ctx("vllm")
    ctx.env = dict(ctx.env) | {"FETCHCONTENT_BASE_DIR": str(ctx.work / "_deps")}
    ctx.echo = lambda m: None
    (ctx.work / "cmake-configure").mkdir()
    (ctx.work / "cmake-configure" / "build.ninja").write_text(
        "build CMakeFiles/_C.dir/csrc/quantization/fp4/gemm.cu.o: CUDA_COMPILER___C_unscanned_Release /s/g.cu\n"
        "  FLAGS = -O3 -gencode arch=compute_120a,code=sm_120a\n")
    with pytest.raises(BuildError, match=r"_C:csrc/quantization/fp4: 1 object\(s\) carry only sm_120a"):
        load("vllm").configure(ctx)
    assert (ctx.work / "device-code.txt").is_file()


def test_a_skip_of_a_family_built_for_another_variant_is_not_a_trap(make_ctx):
    # vLLM 0.14.1's real configure output for 12.1a: NVFP4 is built for 12.0f, and its 10.0f
    # variant reports "Not building NVFP4"; that is no lost family.
    ctx = make_ctx("vllm", wheel_maker("vllm", "0.15.0", {"vllm/__init__.py": ""}))
    ctx.runner.log_path.write_text("-- Building NVFP4 for archs: 12.0f\n"
                                   "-- Not building NVFP4 as no compatible archs were found.\n"
                                   "-- Not building grouped_mm_c3x as no compatible archs found in CUDA target "
                                   "architectures.\n")
    load("vllm").build(ctx)
