"""SGLang's kernel library (recipes/sgl_kernel.py): its plan for tests/releases/sgl-kernel-121a.toml,
its hooks against a recording runner, and the device-code table of its real configure for 12.1a
(tests/data/sgl-kernel-configure/, see its README), on x86_64 and on aarch64."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

# The factory's names through the recipe API: what the recipe under test sees, wherever the engine
# keeps them.
from wheelfactory.recipe_api import BuildContext, BuildError, GitSource, InputError
from wheelfactory.recipe_api import devicecode as dc

from .conftest import CI_RELEASES, RECIPES, SPARK
from .test_recipe_hooks import RecordingRunner

DATA = Path(__file__).parent / "data" / "sgl-kernel-configure"
RELEASE = CI_RELEASES / "sgl-kernel-121a.toml"
# The FetchContent dependencies of sgl-kernel 0.4.3, read off sglang 0753182b's sgl-kernel/CMakeLists.txt
# and cmake/flashmla.cmake (seven) and mscclpp 51eca89's CMakeLists.txt (three), by hand.
PINS = {
    "cutlass": "57e3cfb47a2d9e0d46eb6335c3dc411498efa198", "fmt": "553ec11ec06fbe0beebfbb45f9dc3c9eabd83d28",
    "triton": "v3.6.0", "flashinfer": "bc29697ba20b7e6bdb728ded98f04788e16ee021",
    "flash_attn": "bcf72ccc6816b36a5fae2c5a3c027604629785e0", "mscclpp": "51eca89d20f0cfb3764ccd764338d7b22cd486a6",
    "flashmla": "df022ebafb88578eab9f0300606ee765608d8b5c", "nanobind": "v1.4.0", "dlpack": "v1.1",
    "json": "v3.11.3"}


def recipe():
    spec = importlib.util.spec_from_file_location("sgl_kernel_recipe_for_test", RECIPES / "sgl_kernel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def plan(factory):
    return factory.plan(factory.release(str(RELEASE)))


@pytest.fixture
def step(plan):
    return plan.step("sgl_kernel")


def test_the_release_builds_sgl_kernel_from_the_pinned_sglang_commit_against_adopted_torch(factory):
    plan = factory.plan(factory.release(str(RELEASE)))
    assert [(s.component, s.action) for s in plan.steps] == [("nccl", "adopt"), ("torch", "adopt"),
                                                            ("sgl_kernel", "build")]
    step = plan.step("sgl_kernel")
    assert step.depends_on == ("torch",)
    assert step.source == GitSource("https://github.com/sgl-project/sglang.git",
                                    "0753182b50f041be7f8c6e7f5c01ff79e655ecfb")


def test_every_fetchcontent_dependency_is_an_extra_source_at_its_pin(step):
    assert {name: s.ref for name, s in step.extra_sources.items()} == PINS
    # FlashMLA's CUTLASS and nanobind's robin-map are git submodules; the rest are not cloned with any
    assert sorted(n for n, s in step.extra_sources.items() if s.submodules) == ["flashmla", "nanobind"]


def test_cmake_gets_each_tree_through_fetchcontent_and_may_clone_nothing(step):
    args = step.env["CMAKE_ARGS"].split()
    overrides = dict(a.removeprefix("-DFETCHCONTENT_SOURCE_DIR_").split("=", 1) for a in args
                     if a.startswith("-DFETCHCONTENT_SOURCE_DIR_"))
    assert overrides == {
        "REPO-CUTLASS": "${source_cutlass}", "REPO-FMT": "${source_fmt}", "REPO-TRITON": "${source_triton}",
        "REPO-FLASHINFER": "${source_flashinfer}", "REPO-FLASH-ATTENTION": "${source_flash_attn}",
        "REPO-MSCCLPP": "${source_mscclpp}", "NANOBIND": "${source_nanobind}", "DLPACK": "${source_dlpack}",
        "JSON": "${source_json}",
        # flashmla.cmake edits FlashMLA's sources at configure time: a private copy, not the cache's tree
        "REPO-FLASHMLA": "${work}/deps/flashmla"}
    assert args[-2:] == ["-DFETCHCONTENT_FULLY_DISCONNECTED=ON", "-DSGL_KERNEL_CUDA_ARCHS=12.1a"]
    assert step.env["CMAKE_POLICY_VERSION_MINIMUM"] == "3.5"
    assert step.env["TORCH_CUDA_ARCH_LIST"] == "12.1a"


def test_a_version_without_data_is_refused_naming_the_file(factory, tmp_path):
    release = tmp_path / "r.toml"
    release.write_text(RELEASE.read_text().replace('version = "0.4.3"', 'version = "0.4.4"'))
    with pytest.raises(InputError, match=r"sgl_kernel\.toml.*0\.4\.4"):
        factory.plan(factory.release(str(release)))


def test_without_a_source_the_release_is_told_to_pin_the_commit(factory, tmp_path):
    release = tmp_path / "r.toml"
    text = RELEASE.read_text()
    [source] = [line for line in text.splitlines() if line.startswith("source = ")]
    release.write_text(text.replace(source, ""))
    with pytest.raises(InputError, match="recipe 'sgl_kernel' has no default source"):
        factory.plan(factory.release(str(release)))


@pytest.fixture
def ctx(plan, step, tmp_path):
    work = tmp_path / "work"
    (work / "src" / "sgl-kernel").mkdir(parents=True)
    (work / "dist").mkdir()
    (work / "venv" / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    flashmla = tmp_path / "cache-flashmla"
    (flashmla / "csrc").mkdir(parents=True)
    (flashmla / "csrc" / "utils.h").write_text("#define IS_SM100 1\n")
    c = BuildContext(step, plan.target, work / "src", work, work / "dist", work / "venv", "/usr/local/cuda", 2,
                     dict(step.env) | {"CUDA_HOME": "/opt/cuda-13.0"}, CMakeRunner(work / "log.txt"), False,
                     tmp_path / "cache", {"sgl_kernel": "0.4.3"}, SPARK.cpus)
    c.trees["flashmla"] = flashmla
    c.echo = lambda m: None
    return c


class CMakeRunner(RecordingRunner):
    """Records commands; `cmake` writes `output` to the step's log, as the real one does."""

    output = ""

    def run(self, cmd, **kwargs):
        if str(cmd[0]) == "cmake":
            with open(self.log_path, "a") as f:
                f.write(self.output)
        return super().run(cmd, **kwargs)


def pyproject(ctx, name: str, version: str) -> None:
    (ctx.src / "sgl-kernel" / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "{version}"\n')


def test_prepare_copies_flashmla_out_of_the_cache(ctx):
    pyproject(ctx, "sglang-kernel", "0.4.3")
    recipe().prepare(ctx)
    assert (ctx.work / "deps" / "flashmla" / "csrc" / "utils.h").read_text() == "#define IS_SM100 1\n"


@pytest.mark.parametrize(("name", "version", "message"), [
    ("sglang-kernel", "0.4.2",
     r"says sglang-kernel 0\.4\.2, and the release builds 0\.4\.3; pin sglang commit 0753182b"),
    ("sgl-kernel", "0.4.3", r"builds sgl-kernel, and the recipe declares sglang-kernel"),
])
def test_prepare_refuses_a_tree_of_another_version(ctx, name, version, message):
    pyproject(ctx, name, version)
    with pytest.raises(BuildError, match=message):
        recipe().prepare(ctx)


def test_prepare_refuses_sgl_kernel_alone_as_the_source(ctx):
    with pytest.raises(BuildError, match="no sgl-kernel/pyproject.toml: give the sglang repository"):
        recipe().prepare(ctx)


def configured(ctx, log: str, flags: str) -> None:
    """What CMake would leave: its output in the step's log (after what a resumed step logged before)
    and two CUDA objects in build.ninja."""
    ctx.runner.log_path.write_text("[sgl_kernel] -- PyTorch: CUDA detected: 13.0 (an earlier configure)\n")
    ctx.runner.output = log
    (ctx.work / "cmake-configure").mkdir()
    (ctx.work / "cmake-configure" / "build.ninja").write_text(
        "build CMakeFiles/common_ops_sm100_build.dir/csrc/moe/moe_sum.cu.o: "
        "CUDA_COMPILER__common_ops_sm100_build_unscanned_Release /s/moe_sum.cu\n  FLAGS = " + flags + "\n"
        "build CMakeFiles/flashmla_ops.dir" + str(ctx.work) + "/deps/flashmla/csrc/smxx/combine.cu.o: "
        "CUDA_COMPILER__flashmla_ops_unscanned_Release /s/combine.cu\n  FLAGS = " + flags + "\n")


def test_configure_runs_cmake_as_scikit_build_core_does_and_checks_device_code(ctx):
    configured(ctx, "[sgl_kernel] -- PyTorch: CUDA detected: 13.0\n", "-gencode=arch=compute_121a,code=sm_121a")
    recipe().configure(ctx)
    [cmake] = [argv for argv, _ in ctx.runner.calls if argv[0] == "cmake"]
    assert cmake[1:4] == [str(ctx.src / "sgl-kernel"), "-G", "Ninja"]
    for arg in ("-DSKBUILD_SABI_COMPONENT=Development.SABIModule", "-DSKBUILD_SABI_VERSION=3.10",
                f"-DPython_EXECUTABLE={ctx.python}", f"-DCMAKE_PREFIX_PATH={ctx.site}",
                "-DCMAKE_CUDA_COMPILER=/opt/cuda-13.0/bin/nvcc", "-DCUDA_TOOLKIT_ROOT_DIR=/opt/cuda-13.0",
                "-DFETCHCONTENT_FULLY_DISCONNECTED=ON"):
        assert arg in cmake
    assert "-DSGL_KERNEL_COMPILE_THREADS=10" in cmake  # 20 CPUs / 2 jobs, not sgl-kernel's 32 per nvcc
    assert [f["family"] for f in ctx.device_code["families"]] == [
        "common_ops_sm100_build:csrc/moe", "flashmla_ops:<flashmla>/csrc/smxx"]


def test_configure_against_a_cpu_torch_fails_before_judging_sm_90_only_code(ctx):
    # A CPU torch's CMake never prints the line, CUDA_VERSION stays empty, and sgl-kernel compiles sm_90 only.
    configured(ctx, "[sgl_kernel] -- Found Torch: /v/torch/lib/libtorch.so\n", "-gencode=arch=compute_90,code=sm_90")
    with pytest.raises(BuildError, match="torch's CMake did not report CUDA"):
        recipe().configure(ctx)
    assert not (ctx.work / "device-code.txt").exists()


def test_build_hands_scikit_build_core_the_cmake_arguments(ctx):
    recipe().build(ctx)
    [(argv, env)] = ctx.runner.calls
    assert argv[-1] == str(ctx.src / "sgl-kernel")
    assert env["CMAKE_BUILD_PARALLEL_LEVEL"] == "2"
    assert env["CMAKE_ARGS"].split()[0] == "-DFETCHCONTENT_SOURCE_DIR_REPO-CUTLASS=${source_cutlass}"
    assert "-DSGL_KERNEL_COMPILE_THREADS=10" in env["CMAKE_ARGS"].split()


# The captured configures. Expected counts were taken from the trimmed build.ninja with awk (the
# code= values of each build statement's -gencode flags), not with the parser under test.
def objects(run: str) -> list[dc.CudaObject]:
    return dc.parse_ninja((DATA / run / "build.ninja.trimmed").read_text())


def code_sets(objs) -> Counter:
    return Counter((o.target, " ".join(sorted(c.name for c in o.codes))) for o in objs)


def totals(plan: dc.DeviceCodePlan) -> dict[str, int]:
    return {k: sum(r.verdicts["12.1"][k] for r in plan.rows) for k in ("native", "jit", "none")}


COMMON_X86 = "sm_100a sm_103a sm_120a sm_80 sm_89 sm_90 sm_90a"
COMMON_ARM = "sm_100a sm_103a sm_110a sm_120a sm_121a sm_90 sm_90a"
MSCCLPP = "compute_80 compute_90 sm_80 sm_90"


def test_on_x86_64_sgl_kernel_compiles_nothing_a_gb10_runs_natively():
    objs = objects("0.4.3-12.1a-x86_64")
    assert code_sets(objs) == Counter({
        ("flash_ops", "sm_80 sm_86 sm_90a"): 372, ("common_ops_sm90_build", COMMON_X86): 57,
        ("common_ops_sm100_build", COMMON_X86): 57, ("flashmla_ops", "sm_100a sm_103a sm_90a"): 25,
        ("spatial_ops", COMMON_X86): 1, ("mscclpp_obj", MSCCLPP): 1, ("mscclpp_nccl_obj", MSCCLPP): 1})
    plan = dc.evaluate(objs, ["12.1a"], recipe()._allowances())
    assert totals(plan) == {"native": 0, "jit": 2, "none": 512}
    assert not plan.ok and len(plan.dead_objects) == 512
    # sm_120a is arch-specific code for a 12.0 device, which 12.1 cannot load
    assert any(w.startswith("common_ops_sm100_build:csrc/gemm:") and "sm_120a" in w for w in plan.warnings)


def test_on_aarch64_the_common_ops_are_native_and_fa3_and_flashmla_are_dead_on_12_1():
    objs = objects("0.4.3-12.1a-aarch64")
    assert code_sets(objs) == Counter({
        ("flash_ops", "sm_90a"): 252, ("common_ops_sm90_build", COMMON_ARM): 57,
        ("common_ops_sm100_build", COMMON_ARM): 57, ("flashmla_ops", "sm_100a sm_103a sm_90a"): 25,
        ("spatial_ops", COMMON_ARM): 1, ("mscclpp_obj", MSCCLPP): 1, ("mscclpp_nccl_obj", MSCCLPP): 1})
    plan = dc.evaluate(objs, ["12.1a"], recipe()._allowances())
    assert totals(plan) == {"native": 115, "jit": 2, "none": 277}
    dead_targets = Counter(name.split(":", 1)[0] for name in plan.dead_objects)
    assert dead_targets == Counter({"flash_ops": 252, "flashmla_ops": 25})
    assert sorted(e.split(":", 2)[0] + ":" + e.split(":", 2)[1] for e in plan.errors if "PTX" in e) == [
        "mscclpp_nccl_obj:src", "mscclpp_obj:src/executor"]


def test_the_captured_configures_found_cuda_through_torch():
    for run in ("0.4.3-12.1a-x86_64", "0.4.3-12.1a-aarch64"):
        assert recipe()._check_torch_found_cuda((DATA / run / "cmake.log").read_text()) == "13.0"
    assert "For aarch64, disable gencode below SM90" in (DATA / "0.4.3-12.1a-aarch64" / "cmake.log").read_text()


def test_patched_12_1a_is_native_everywhere_and_builds_no_fa3_or_flashmla():
    objs = objects("0.4.3-12.1a-patched")
    assert code_sets(objs) == Counter({
        ("common_ops_sm90_build", "sm_121a"): 57, ("common_ops_sm100_build", "sm_121a"): 57,
        ("spatial_ops", "sm_121a"): 1, ("mscclpp_obj", "sm_121a"): 1, ("mscclpp_nccl_obj", "sm_121a"): 1})
    plan = dc.evaluate(objs, ["12.1a"], recipe()._allowances())
    assert plan.ok, plan.errors
    assert plan.warnings == []
    assert totals(plan) == {"native": 117, "jit": 0, "none": 0}
    # the same sources as the unpatched aarch64 run, minus FlashAttention 3 and FlashMLA
    before = {(o.target, o.source) for o in objects("0.4.3-12.1a-aarch64")
              if o.target not in ("flash_ops", "flashmla_ops")}
    assert {(o.target, o.source) for o in objs} == before
    log = (DATA / "0.4.3-12.1a-patched" / "cmake.log").read_text()
    assert "SGL_KERNEL_CUDA_ARCHS=12.1a: FA3 OFF, FlashMLA OFF" in log


def test_the_patches_are_declared_for_both_trees_say_why_and_enter_the_key(step):
    patches = step.patches
    assert [p.name.rsplit("/", 1)[1] for p in patches["source"]] == ["0001-arch-list-from-the-release.patch"]
    assert [p.name.rsplit("/", 1)[1] for p in patches["mscclpp"]] == [
        "mscclpp-0001-cuda-architectures-from-the-project.patch"]
    for p in patches["source"] + patches["mscclpp"]:
        header = p.path.read_text().split("\n--- a/", 1)[0]
        assert "Why:" in header and "Upstream" in header and "Apply:" in header
    assert sorted(step.key_inputs["patches"]) == ["mscclpp", "source"]


@pytest.mark.parametrize(("archs", "expected"), [(["12.1a"], "12.1a"), (["9.0a", "12.1a"], "9.0a;12.1a"),
                                                  (["12.0f"], "12.0f")])
def test_the_patch_gets_the_release_s_arch_list(factory, tmp_path, archs, expected):
    release = tmp_path / "r.toml"
    release.write_text(RELEASE.read_text().replace('cuda_arch_list = ["12.1a"]', f"cuda_arch_list = {archs!r}"
                                                   .replace("'", '"')))
    step = factory.plan(factory.release(str(release))).step("sgl_kernel")
    assert f"-DSGL_KERNEL_CUDA_ARCHS={expected}" in step.env["CMAKE_ARGS"].split()


def test_a_ptx_entry_is_refused_at_plan_time(factory, tmp_path):
    release = tmp_path / "r.toml"
    release.write_text(RELEASE.read_text().replace('cuda_arch_list = ["12.1a"]', 'cuda_arch_list = ["12.0+PTX"]'))
    with pytest.raises(InputError, match=r"sgl_kernel compiles SASS only.*drop '\+PTX' from 12\.0\+PTX"):
        factory.plan(factory.release(str(release)))


@pytest.mark.parametrize(("torch", "refused"), [("2.14.1", True), ("2.15.0", True), ("2.13.0", False),
                                                 ("2.11.0", False)])
def test_a_torch_whose_headers_need_cpp20_is_refused_at_plan_time(factory, tmp_path, torch, refused):
    # torch 2.14.1's torch/all.h: "#error C++20 or later ..."; 2.11.0's and 2.13.0's ask for C++17
    release = tmp_path / "r.toml"
    release.write_text(RELEASE.read_text().replace('version = "2.11.0"\nadopt = "torch==2.11.0"',
                                                   f'version = "{torch}"\nadopt = "torch=={torch}"'))
    if refused:
        with pytest.raises(InputError, match=rf"torch {torch}'s headers require C\+\+20: give the release a torch "
                                             r"below 2\.14"):
            factory.plan(factory.release(str(release)))
    else:
        assert factory.plan(factory.release(str(release))).step("torch").version == torch
