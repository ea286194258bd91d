"""The device-code check on data captured from real configure runs of the vLLM 0.13.0, 0.14.1 and
0.33.0 sdists (tests/data/vllm-configure/, see its README: vLLM's CMake with its dependencies, trimmed to
the CUDA objects' flags), before and after recipes/patches/vllm/<version>/."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.cuda import devicecode as dc
from wheelfactory.sources.patches import declared_patches

from .conftest import RECIPES

DATA = Path(__file__).parent / "data" / "vllm-configure"


def objects(run: str) -> list[dc.CudaObject]:
    return dc.parse_ninja((DATA / run / "build.ninja.trimmed").read_text())


def shipped_allowances() -> list[dc.Allowance]:
    spec = importlib.util.spec_from_file_location("vllm_recipe_for_test", RECIPES / "vllm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._allowances()


def code_sets(objs, *, targets_except=()) -> Counter:
    return Counter(" ".join(c.name for c in o.codes) for o in objs if o.target not in targets_except)


def error_families(plan: dc.DeviceCodePlan) -> list[str]:
    """The `<target>:<source dir>` of each policy error, sorted."""
    return sorted(":".join(e.split(":", 2)[:2]) for e in plan.errors)


def assert_patched_run_is_native(run: str, unpatched: str, expected_sets: Counter) -> None:
    """A patched configure passes the shipped policy for 12.1a with no warning, has exactly the
    unpatched run's objects minus FlashAttention 3's (other flags only), and the expected code sets."""
    objs = objects(run)
    plan = dc.evaluate(objs, ["12.1a"], shipped_allowances())
    assert plan.ok, plan.errors
    assert plan.warnings == []
    assert code_sets(objs) == expected_sets
    before = {(o.target, o.source) for o in objects(unpatched) if o.target != "_vllm_fa3_C"}
    assert {(o.target, o.source) for o in objs} == before


def test_unpatched_12_1a_reproduces_the_measured_table():
    objs = objects("0.14.1-12.1a")
    # The table of the device-code issue, measured on build.ninja by hand: _C, _moe_C and FA2.
    assert code_sets(objs, targets_except=("_vllm_fa3_C",)) == Counter({
        "compute_80 sm_80": 87, "compute_90 sm_90": 8, "compute_89 sm_89": 1,
        "sm_120": 46, "sm_120f": 10, "sm_120a": 6})
    fa3 = [o for o in objs if o.target == "_vllm_fa3_C"]
    assert len(fa3) == 222 and all(o.codes == () for o in fa3)  # FA3_ARCHS empty: no -gencode at all


def test_unpatched_12_1a_fails_the_shipped_policy_before_compiling():
    plan = dc.evaluate(objects("0.14.1-12.1a"), ["12.1a"], shipped_allowances())
    assert not plan.ok
    assert len(plan.dead_objects) == 228  # 6 QuTLASS sm_120a + 222 FA3
    assert error_families(plan) == sorted([
        "_C:<qutlass_src>/qutlass/csrc", "_vllm_fa3_C:hopper", "_vllm_fa3_C:hopper/instantiations",
        "_C:csrc/quantization/gptq_marlin", "_C:csrc/quantization/hadamard/hadacore",
        "_C:csrc/quantization/marlin/sparse", "_C:csrc/quantization/w8a8/cutlass",
        "_moe_C:csrc/moe/marlin_moe_wna16", "_vllm_fa2_C:csrc/flash_attn/src"])
    assert plan.warnings == ["_C:<qutlass_src>/qutlass/csrc: 6 object(s) carry sm_120a, arch-specific code "
                             "for a device outside the release"]


def test_patched_12_1a_is_native_everywhere_and_builds_no_fa3():
    objs = objects("0.14.1-12.1a-patched")
    plan = dc.evaluate(objs, ["12.1a"], shipped_allowances())
    assert plan.ok, plan.errors
    assert plan.warnings == []
    assert len(objs) == 158 and not any(o.target == "_vllm_fa3_C" for o in objs)
    assert code_sets(objs) == Counter({"sm_120": 142, "sm_120f": 16})
    assert {d: sum(r.verdicts["12.1"]["native"] for r in plan.rows) for d in ["12.1"]} == {"12.1": 158}


def test_patched_hopper_and_spark_release_passes_with_declared_hopper_allowances():
    objs = objects("0.14.1-9.0a_12.1a-patched")
    assert dc.evaluate(objs, ["9.0a", "12.1a"], shipped_allowances()).ok
    without = dc.evaluate(objs, ["9.0a", "12.1a"])
    # Only Hopper needs allowances: every object that 12.1 can load, it loads natively.
    assert all("for 12.1" not in e for e in without.errors)
    assert any(e.startswith("_C:csrc/quantization/machete:") for e in without.errors)
    assert len([o for o in objs if o.target == "_vllm_fa3_C"]) == 222  # FA3 stays for Hopper


def test_0_13_0_has_the_0_14_1_trap_and_its_patches_fix_it():
    # Counted from the trimmed build.ninja with awk, not with the parser under test.
    objs = objects("0.13.0-12.1a")
    assert code_sets(objs, targets_except=("_vllm_fa3_C",)) == Counter({
        "compute_80 sm_80": 87, "compute_90 sm_90": 8, "compute_89 sm_89": 1,
        "sm_120": 45, "sm_120f": 10, "sm_120a": 6})
    assert len([o for o in objs if o.target == "_vllm_fa3_C" and o.codes == ()]) == 222
    assert not dc.evaluate(objs, ["12.1a"], shipped_allowances()).ok
    assert_patched_run_is_native("0.13.0-12.1a-patched", "0.13.0-12.1a", Counter({"sm_120": 141, "sm_120f": 16}))


# vLLM 0.33.0 for 12.1a. The expected sets were counted from the trimmed build.ninja with awk
# (gencode pairs per build statement), not with the parser under test.
def test_unpatched_0_33_0_still_has_jit_only_and_fa3_objects_on_12_1():
    objs = objects("0.33.0-12.1a")
    assert code_sets(objs, targets_except=("_vllm_fa3_C",)) == Counter({
        "compute_80 sm_80": 81, "compute_89 sm_89": 1, "compute_90 sm_90": 1, "sm_120": 47, "sm_120f": 61})
    fa3 = [o for o in objs if o.target == "_vllm_fa3_C"]
    assert len(fa3) == 192 and all(o.codes == () for o in fa3)
    plan = dc.evaluate(objs, ["12.1a"], shipped_allowances())
    assert not plan.ok and len(plan.dead_objects) == 192  # no sm_120a left in 0.33: only FA3 is dead
    assert error_families(plan) == sorted([
        "_vllm_fa3_C:hopper", "_vllm_fa3_C:hopper/instantiations", "_vllm_fa2_C:csrc/flash_attn/src",
        "_C_stable_libtorch:csrc/quantization/hadamard/hadacore", "_C_stable_libtorch:csrc/quantization/marlin",
        "_C_stable_libtorch:csrc/quantization/w8a8/cutlass", "_moe_C_stable_libtorch:csrc/moe/marlin_moe_wna16"])
    assert plan.warnings == []


def test_patched_0_33_0_is_native_everywhere_and_builds_no_fa3():
    assert_patched_run_is_native("0.33.0-12.1a-patched", "0.33.0-12.1a", Counter({"sm_120": 130, "sm_120f": 61}))
    assert len(objects("0.33.0-12.1a-patched")) == 191


def test_the_0_33_0_patches_are_declared_and_say_why():
    patches = declared_patches(RECIPES, "vllm", "0.33.0", ("flash_attn",))
    assert [p.name.rsplit("/", 1)[1] for p in patches["source"]] == [
        "0001-marlin-ops-sm120-native.patch", "0002-hadacore-c2x-sm120-native.patch"]
    assert [p.name.rsplit("/", 1)[1] for p in patches["flash_attn"]] == [
        "flash-attn-0001-fa2-sm120-native.patch", "flash-attn-0002-fa3-only-with-hopper.patch"]
    for p in patches["source"] + patches["flash_attn"]:
        header = p.path.read_text().split("\n--- a/", 1)[0]
        assert "Why:" in header and "Upstream" in header and "0.33.0" in header


def test_the_0_14_1_patches_are_declared_for_both_trees():
    patches = declared_patches(RECIPES, "vllm", "0.14.1", ("cutlass", "flash_attn", "flashmla", "qutlass",
                                                           "triton_kernels"))
    assert [p.name.rsplit("/", 1)[1] for p in patches["source"]] == [
        "0001-marlin-sm120-native.patch", "0002-hadacore-c2x-sm120-native.patch", "0003-qutlass-sm120f.patch",
        "0004-marlin-fp8-gate-sm12x.patch"]
    assert len(patches["flash_attn"]) == 2
    for p in patches["source"] + patches["flash_attn"]:
        header = p.path.read_text().split("\n--- a/", 1)[0]
        assert "Why:" in header and "Upstream" in header  # every patch says why and what upstream did


def test_the_patches_enter_vllm_s_key(factory):
    plan = factory.plan(factory.release("0.14.1-t4"), ["vllm"])
    inputs = plan.step("vllm").key_inputs["patches"]
    assert sorted(inputs) == ["flash_attn", "source"]
    assert [p["name"] for p in inputs["source"]][0] == "vllm/0.14.1/0001-marlin-sm120-native.patch"


def vllm_sdist(cache_dir: Path, version: str) -> Path:
    """The real vLLM sdist from PyPI (0.13.0, 0.14.1: ~18 MB, 0.33.0: 47 MB), hash-checked, kept in
    pytest's cache."""
    import hashlib

    import requests
    path = cache_dir / f"vllm-{version}.tar.gz"
    index = requests.get("https://pypi.org/simple/vllm/", timeout=60,
                         headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    [entry] = [f for f in index["files"] if f["filename"] == path.name]
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["hashes"]["sha256"]:
        path.write_bytes(requests.get(entry["url"], timeout=300).content)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["hashes"]["sha256"]
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("version", "expected"), [
    ("0.13.0", 'cuda_archs_loose_intersection(MARLIN_MOE_ARCHS "8.0+PTX;12.0" "${CUDA_ARCHS}")'),
    ("0.14.1", 'cuda_archs_loose_intersection(MARLIN_ARCHS "8.0+PTX;12.0" "${CUDA_ARCHS}")'),
    ("0.33.0", 'cuda_archs_loose_intersection(MARLIN_OTHER_ARCHS "7.5;8.0+PTX;12.0" "${CUDA_ARCHS}")'),
])
def test_the_vllm_patches_apply_to_the_real_sdist(tmp_path, request, version, expected):
    import tarfile

    from wheelfactory.run.runner import Runner
    from wheelfactory.sources.patches import apply_patches
    sdist = vllm_sdist(Path(request.config.cache.mkdir("vllm-sdist")), version)
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path, filter="data")
    tree = tmp_path / f"vllm-{version}"
    patches = declared_patches(RECIPES, "vllm", version, ("flash_attn",))["source"]
    apply_patches(tree, patches, Runner("vllm", tmp_path / "log"), "vllm")
    assert expected in (tree / "CMakeLists.txt").read_text()


# Run-time gates that accept 12.0 and reject 12.1: an exact 120 in a capability comparison.
EXACT_120_GATE = re.compile(r"(?:minor_capability|capability\(\s*)\s*(?:==\s*)?120\b|is_device_capability\(\s*120\s*\)")
GATED_FILES = {"0.13.0": ("csrc/quantization/gptq_marlin/gptq_marlin.cu", "csrc/moe/marlin_moe_wna16/ops.cu",
                          "vllm/model_executor/layers/quantization/utils/marlin_utils.py"),
               "0.14.1": ("csrc/quantization/gptq_marlin/gptq_marlin.cu", "csrc/moe/marlin_moe_wna16/ops.cu",
                          "vllm/model_executor/layers/quantization/utils/marlin_utils.py"),
               "0.33.0": ("csrc/quantization/marlin/marlin.cu", "csrc/moe/marlin_moe_wna16/ops.cu",
                          "vllm/model_executor/layers/quantization/utils/marlin_utils.py")}


def exact_120_gates(tree: Path, files: tuple[str, ...]) -> list[str]:
    """'file:line' of each run-time capability gate that names exactly 120 (rejects GB10's 12.1)."""
    out = []
    for name in files:
        text = (tree / name).read_text()
        # a Python call split over lines: join each `is_device_capability(\n 120\n)` onto one line
        text = re.sub(r"\(\s*\n\s*(\d+)\s*\n\s*\)", r"(\1)", text)
        out += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if EXACT_120_GATE.search(line)]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("version", ["0.13.0", "0.14.1", "0.33.0"])
def test_the_patched_sdist_has_no_gate_that_rejects_12_1(tmp_path, request, version):
    """The Marlin W4A8-FP8 gates (`== 120`) of 0.13.0 and 0.14.1 are there before the patches and gone
    after (family 12); 0.33.0 has family checks upstream (vllm-project/vllm#35568)."""
    import tarfile

    from wheelfactory.run.runner import Runner
    from wheelfactory.sources.patches import apply_patches
    sdist = vllm_sdist(Path(request.config.cache.mkdir("vllm-sdist")), version)
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if m.name.split("/", 1)[-1] in GATED_FILES[version]
                   or m.name.endswith("/CMakeLists.txt") and m.name.count("/") == 1]
        tf.extractall(tmp_path, members=members, filter="data")
    tree = tmp_path / f"vllm-{version}"
    before = exact_120_gates(tree, GATED_FILES[version])
    patches = declared_patches(RECIPES, "vllm", version, ("flash_attn",))["source"]
    gate_patches = tuple(p for p in patches if "gate" in p.name)
    apply_patches(tree, gate_patches, Runner("vllm", tmp_path / "log"), "vllm")
    after = exact_120_gates(tree, GATED_FILES[version])
    if version == "0.33.0":
        assert before == [] and gate_patches == ()
    else:
        assert len(before) == 3 and after == [], (before, after)
        assert "major_capability == 12," in (tree / GATED_FILES[version][0]).read_text()
        assert "is_device_capability_family(120)" in (tree / GATED_FILES[version][2]).read_text()


def test_extra_sources_can_be_replaced_by_the_release_or_the_command_line(factory, tmp_path):
    deps = tmp_path / "deps"
    for name in ("cutlass", "qutlass"):
        (deps / name).mkdir(parents=True)
        (deps / name / "README").write_text(name)
    release = tmp_path / "r.toml"
    release.write_text(f'extends = "0.14.1-t4"\n[components.vllm.extra_sources]\n'
                       f'cutlass = {{ path = "{deps / "cutlass"}" }}\n')
    step = factory.plan(factory.release(str(release)), ["vllm"]).step("vllm")
    assert step.extra_sources["cutlass"].describe() == str(deps / "cutlass")
    assert step.extra_sources["flash_attn"].describe().startswith("https://github.com/vllm-project/flash-attention")
    step = factory.plan(factory.release(str(release)), ["vllm"],
                        source_dirs=[f"vllm.qutlass={deps / 'qutlass'}"]).step("vllm")
    assert step.extra_sources["qutlass"].describe() == str(deps / "qutlass")
    release.write_text(f'extends = "0.14.1-t4"\n[components.vllm.extra_sources]\n'
                       f'cutlas = {{ path = "{deps / "cutlass"}" }}\n')
    with pytest.raises(InputError, match=r"extra source 'cutlas' is not one of vllm's \(did you mean 'cutlass'\?\)"):
        factory.plan(factory.release(str(release)), ["vllm"])
