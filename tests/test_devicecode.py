"""The device-code plan: reading nvcc flags out of a CMake-generated build.ninja, and the policy."""

from wheelfactory.cuda import devicecode as dc
from wheelfactory.cuda.cuda_compat import parse_code

# The shapes CMake 3.25+ writes for CUDA objects: per-source -gencode options (vLLM's
# set_gencode_flags_for_srcs), the CUDA_ARCHITECTURES form and a `$`-continued line.
NINJA = """\
build CMakeFiles/_C.dir/csrc/cache_kernels.cu.o: CUDA_COMPILER___C_unscanned_Release /s/csrc/cache_kernels.cu || $
    cmake_object_order_depends_target__C
  DEFINES = -DTORCH_EXTENSION_NAME=_C
  DEP_FILE = CMakeFiles/_C.dir/csrc/cache_kernels.cu.o.d
  FLAGS = -O3 -DNDEBUG -std=c++17 -Xcompiler=-fPIC --threads=1 -gencode arch=compute_120,code=sm_120
  INCLUDES = -I/s/csrc
  OBJECT_DIR = CMakeFiles/_C.dir

build CMakeFiles/_C.dir/csrc/quantization/gptq_marlin/kernel_bf16_ku4.cu.o: CUDA_COMPILER___C_unscanned_Release $
    /s/csrc/quantization/gptq_marlin/kernel_bf16_ku4.cu
  FLAGS = -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_80,code=compute_80
  OBJECT_DIR = CMakeFiles/_C.dir

build CMakeFiles/_C.dir/csrc/quantization/fp4/nvfp4_quant_kernels.cu.o: CUDA_COMPILER___C_unscanned_Release /s/q.cu
  FLAGS = -O3 $
      -gencode arch=compute_120f,code=sm_120f
  OBJECT_DIR = CMakeFiles/_C.dir

build CMakeFiles/_C.dir/__/qutlass/csrc/gemm.cu.o: CUDA_COMPILER___C_unscanned_Release /q/csrc/gemm.cu
  FLAGS = -O3 -gencode arch=compute_120a,code=sm_120a
  OBJECT_DIR = CMakeFiles/_C.dir

build _deps/vllm-flash-attn-build/CMakeFiles/_vllm_fa3_C.dir/hopper/flash_fwd_hdim64_bf16_sm90.cu.o: $
    CUDA_COMPILER___vllm_fa3_C_unscanned_Release /f/hopper/x.cu
  FLAGS = -O3 "--generate-code=arch=compute_90a,code=[sm_90a]"
  OBJECT_DIR = _deps/vllm-flash-attn-build/CMakeFiles/_vllm_fa3_C.dir

build CMakeFiles/_C.dir/csrc/torch_bindings.cpp.o: CXX_COMPILER___C_unscanned_Release /s/csrc/torch_bindings.cpp
  FLAGS = -O3 -gencode arch=compute_90,code=sm_90
"""


def codes(*names):
    return tuple(sorted(parse_code(n) for n in names))


def test_flags_in_every_form():
    assert dc.codes_from_flags("-gencode arch=compute_120,code=sm_120") == codes("sm_120")
    assert dc.codes_from_flags("-gencode=arch=compute_121a,code=sm_121a") == codes("sm_121a")
    assert dc.codes_from_flags('"--generate-code=arch=compute_80,code=[compute_80,sm_80]"') == codes(
        "sm_80", "compute_80")
    assert dc.codes_from_flags("-O3 -arch=sm_90a") == codes("sm_90a", "compute_90a")
    assert dc.codes_from_flags("-O3 -Xcompiler=-fPIC") == ()


def test_parse_ninja_finds_cuda_objects_only_with_their_targets():
    objs = dc.parse_ninja(NINJA)
    assert [o.name for o in objs] == [
        "_C:csrc/cache_kernels.cu",
        "_C:csrc/quantization/gptq_marlin/kernel_bf16_ku4.cu",
        "_C:csrc/quantization/fp4/nvfp4_quant_kernels.cu",
        "_C:__/qutlass/csrc/gemm.cu",
        "_vllm_fa3_C:hopper/flash_fwd_hdim64_bf16_sm90.cu",
    ]  # the .cpp object is not CUDA
    assert objs[1].codes == codes("sm_80", "compute_80")
    assert objs[2].codes == codes("sm_120f")  # the continued line was joined
    assert objs[1].family == "_C:csrc/quantization/gptq_marlin"


def test_policy_for_a_gb10_release():
    plan = dc.evaluate(dc.parse_ninja(NINJA), ["12.1a"])
    assert not plan.ok
    assert sorted(plan.dead_objects) == ["_C:__/qutlass/csrc/gemm.cu",
                                         "_vllm_fa3_C:hopper/flash_fwd_hdim64_bf16_sm90.cu"]
    assert plan.errors == [
        "_C:__/qutlass/csrc: 1 object(s) carry only sm_120a, which no device of the release (12.1) can load",
        "_vllm_fa3_C:hopper: 1 object(s) carry only sm_90a, which no device of the release (12.1) can load",
        "_C:csrc/quantization/gptq_marlin: 1 object(s) have only PTX for 12.1 (JIT-compiled at first use, not "
        "native); fix the arch flags, or declare the family an accepted JIT fallback with its reason",
    ]
    assert plan.warnings == [
        "_C:__/qutlass/csrc: 1 object(s) carry sm_120a, arch-specific code for a device outside the release",
        "_vllm_fa3_C:hopper: 1 object(s) carry sm_90a, arch-specific code for a device outside the release",
    ]
    rows = {r.family: r for r in plan.rows}
    assert rows["_C:csrc"].verdicts == {"12.1": {"native": 1, "jit": 0, "none": 0}}


def test_accepted_jit_fallback_and_multi_device_release():
    objs = [o for o in dc.parse_ninja(NINJA) if "qutlass" not in o.source]
    fallback = dc.Allowance("_C:csrc/quantization/gptq_marlin/*", "stand-in reason")
    plan = dc.evaluate(objs, ["9.0a", "12.1a"], [fallback])
    # With a Hopper device in the release, the FA3 object is Hopper-specialised, not dead; the Marlin
    # object is JIT on 9.0 and 12.1, accepted by the fallback.
    assert plan.ok, plan.errors
    assert plan.warnings == []
    assert {r.family: r.accepted for r in plan.rows}["_C:csrc/quantization/gptq_marlin"] == "stand-in reason"
    # a fallback limited to another device does not cover 12.1
    narrow = dc.Allowance("_C:csrc/quantization/gptq_marlin/*", "r", devices=("9.0",))
    assert [e.split(":")[0] for e in dc.evaluate(objs, ["9.0a", "12.1a"], [narrow]).errors] == ["_C"]


def test_render_has_a_row_per_family_and_totals():
    text = dc.render(dc.evaluate(dc.parse_ninja(NINJA), ["12.1a"]))
    lines = text.splitlines()
    assert lines[0].split() == ["family", "objects", "SASS", "PTX", "on", "12.1"]
    assert any(line.startswith("_vllm_fa3_C:hopper") and line.endswith("1 none") for line in lines)
    assert "5 CUDA objects; on 12.1: 2 native, 1 JIT only, 2 not loadable" in lines


def test_sources_outside_the_project_are_named_by_their_tree():
    text = ("build CMakeFiles/_C.dir/home/me/deps/qutlass/qutlass/csrc/gemm.cu.o: CUDA_COMPILER___C_unscanned_Release "
            "/home/me/deps/qutlass/qutlass/csrc/gemm.cu\n  FLAGS = -gencode arch=compute_120f,code=sm_120f\n")
    [obj] = dc.parse_ninja(text, {"qutlass": "/home/me/deps/qutlass", "deps": "/home/me/deps"})
    assert obj.name == "_C:<qutlass>/qutlass/csrc/gemm.cu"  # the longest root wins
    [obj] = dc.parse_ninja(text)
    assert obj.name == "_C:home/me/deps/qutlass/qutlass/csrc/gemm.cu"
