"""The real release 0.15.0-t4, planned for a Spark: every recipe's resolved flags, so that a
regression in a flag (the traps the anchors' users hit) fails a test."""

from __future__ import annotations

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.cuda.cuda_arch import parse_arch_list

from .conftest import RECIPES


@pytest.fixture(scope="module")
def plan(request):
    from wheelfactory.pipeline.factory import Factory

    from .conftest import SPARK

    tmp = request.config._tmp_path_factory.mktemp("flags")  # type: ignore[attr-defined]
    f = Factory(RECIPES, tmp / "wh", tmp / "cache", host_probe=lambda: SPARK)
    return f.plan(f.release("0.15.0-t4"))


def env(plan, comp):
    return plan.step(comp).env


def test_nccl_gencode_is_sm121(plan):
    assert env(plan, "nccl")["NVCC_GENCODE"] == "-gencode=arch=compute_121,code=sm_121"


def test_torch_uses_the_factory_nccl_wheel(plan):
    e = env(plan, "torch")
    assert e["USE_SYSTEM_NCCL"] == "1" and e["USE_NCCL"] == "1" and e["USE_CUDA"] == "1"
    assert e["NCCL_ROOT"] == "${site}/nvidia/nccl"
    assert e["NCCL_LIB_DIR"] == "${site}/nvidia/nccl/lib" and e["NCCL_INCLUDE_DIR"] == "${site}/nvidia/nccl/include"
    assert e["TORCH_CUDA_ARCH_LIST"] == "12.1a"
    assert e["PYTORCH_BUILD_VERSION"] == "2.10.0" and e["PYTORCH_BUILD_NUMBER"] == "1"
    assert e["BUILD_TEST"] == "0"
    assert e["USE_PRIORITIZED_TEXT_FOR_LD"] == "1"  # aarch64
    assert "-compress-all" in e["TORCH_NVCC_FLAGS"]
    reqs = e["PYTORCH_EXTRA_INSTALL_REQUIREMENTS"].split("|")
    assert reqs[0] == "nvidia-nccl-cu13==2.29.2"
    assert any(r.startswith("nvidia-cudnn-cu13==") for r in reqs)
    assert e["USE_CUDNN"] == "1" and e["USE_CUSPARSELT"] == "1"
    assert "MAX_JOBS" not in e  # jobs are a runtime setting, never part of the key


def test_torch_links_nccl_through_the_wheel_layout():
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_recipe", RECIPES / "torch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "$ORIGIN/../../nvidia/nccl/lib" in mod.RPATHS
    assert "$ORIGIN/../../nvidia/cu13/lib" in mod.RPATHS


def test_torchvision_and_torchaudio_force_cuda_and_pin_torch(plan):
    v, a = env(plan, "torchvision"), env(plan, "torchaudio")
    assert v["FORCE_CUDA"] == "1" and a["USE_CUDA"] == "1"
    assert v["PYTORCH_VERSION"] == a["PYTORCH_VERSION"] == "2.10.0"
    assert v["TORCH_CUDA_ARCH_LIST"] == a["TORCH_CUDA_ARCH_LIST"] == "12.1a"
    assert v["BUILD_VERSION"] == "0.25.0" and a["BUILD_VERSION"] == "2.10.0"


def test_triton_builds_offline_from_prefetched_llvm(plan):
    step = plan.step("triton")
    e = step.env
    assert e["TRITON_OFFLINE_BUILD"] == "1"
    assert e["LLVM_SYSPATH"] == "${source_llvm}" and e["JSON_SYSPATH"] == "${source_json}"
    assert e["TRITON_PTXAS_PATH"] == "${cuda_home}/bin/ptxas"
    assert step.extra_sources["llvm"].url.endswith("llvm-7d5de303-ubuntu-arm64.tar.gz")
    assert "MAX_JOBS" not in e


def test_flashinfer_arch_list_and_no_pip(plan):
    e = env(plan, "flashinfer")
    assert e["FLASHINFER_CUDA_ARCH_LIST"] == "12.1a"
    assert e["FLASHINFER_BUILD_NO_PIP"] == "1"
    assert e["UV_PYTHON_DOWNLOADS"] == "never"


def test_vllm_gets_every_fetched_dependency_through_its_src_dir(plan):
    step = plan.step("vllm")
    e = step.env
    assert e["TORCH_CUDA_ARCH_LIST"] == "12.1a"
    assert e["CMAKE_BUILD_TYPE"] == "Release"
    assert e["VLLM_TARGET_DEVICE"] == "cuda"
    expected = {"cutlass": "VLLM_CUTLASS_SRC_DIR", "flash_attn": "VLLM_FLASH_ATTN_SRC_DIR",
                "flashmla": "FLASH_MLA_SRC_DIR", "qutlass": "QUTLASS_SRC_DIR",
                "triton_kernels": "TRITON_KERNELS_SRC_DIR"}
    assert set(step.extra_sources) == set(expected)
    for name, var in expected.items():
        assert e[var].startswith("${source_" + name + "}")
    assert e["TRITON_KERNELS_SRC_DIR"].endswith("/python/triton_kernels/triton_kernels")
    assert step.build_with == ("torch",)
    assert set(step.depends_on) == {"torch", "nccl", "triton", "flashinfer"}


def _vllm_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vllm_recipe", RECIPES / "vllm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SPARK_ARCHS = parse_arch_list(["12.1a"])


def test_vllm_skipped_nvfp4_fails_the_build():
    log = ("-- CUDA supported target architectures: 12.0\n"
           "-- Not building Machete kernels as no compatible archs found in CUDA target architectures\n"
           "-- Not building NVFP4 as no compatible archs were found.\n")
    with pytest.raises(BuildError, match="NVFP4"):
        _vllm_module()._check_no_skipped_kernels(log, SPARK_ARCHS)


def test_vllm_expected_skips_pass():
    log = "-- Not building Machete kernels as no compatible archs found in CUDA target architectures\n"
    _vllm_module()._check_no_skipped_kernels(log, SPARK_ARCHS)


def test_vllm_scaled_mm_sm120_skip_fails():
    log = "-- Not building scaled_mm_c3x_120 as no compatible archs found in CUDA target architectures\n"
    with pytest.raises(BuildError, match="scaled_mm_c3x_120"):
        _vllm_module()._check_no_skipped_kernels(log, SPARK_ARCHS)


def test_flashinfer_reads_the_parsed_arch_list():
    """FlashInfer splits its list on single spaces and knows no +PTX: each parsed arch, suffix kept."""
    from wheelfactory.planning.recipe import EnvSpec, Target, load_recipes

    environment = load_recipes(RECIPES)["flashinfer"].hook("environment")
    target = Target("3.12", "13.1.0", ("9.0a;12.1a", " 12.0+PTX"), "linux_aarch64", "13.1")
    spec = EnvSpec("0.6.2", target, {}, {"cubin": False, "jit_cache": False})
    assert environment(spec)["FLASHINFER_CUDA_ARCH_LIST"] == "9.0a 12.1a 12.0"


def test_flashinfer_arch_list_on_the_spark(plan):
    assert env(plan, "flashinfer")["FLASHINFER_CUDA_ARCH_LIST"] == "12.1a"


def _flashinfer_env(archs: tuple[str, ...], **options: bool) -> dict[str, str]:
    from wheelfactory.planning.recipe import EnvSpec, Target, load_recipes

    environment = load_recipes(RECIPES)["flashinfer"].hook("environment")
    target = Target("3.12", "13.1.0", archs, "linux_aarch64", "13.1")
    return environment(EnvSpec("0.7.2.post1", target, {}, {"cubin": False, "jit_cache": False} | options))


def test_flashinfer_jit_cache_builds_every_module_for_the_spark():
    e = _flashinfer_env(("12.1a",), jit_cache=True)
    # nvcc gets compute_121a from "12.1a" (FlashInfer keeps a given suffix), and the module set is
    # named, not left to CI variables the build does not see
    assert e["FLASHINFER_CUDA_ARCH_LIST"] == "12.1a" and e["FLASHINFER_AOT_BUILD_PROFILE"] == "full"
    assert "FLASHINFER_AOT_BUILD_PROFILE" not in _flashinfer_env(("12.1a",))  # flashinfer-python alone compiles nothing


def test_flashinfer_cubin_for_a_spark_only_release_is_refused():
    from wheelfactory.core.errors import InputError

    with pytest.raises(InputError, match=r"options.cubin .* exist for 10.x and 11.x GPUs only; none would load on "
                                         r"the release's arch list \(12.1a\)"):
        _flashinfer_env(("12.1a",), cubin=True)
    # with a B200 in the list the cubins serve it
    assert _flashinfer_env(("10.0a", "12.1a"), cubin=True)["FLASHINFER_CUDA_ARCH_LIST"] == "10.0a 12.1a"
