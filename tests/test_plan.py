"""Planning: order, build keys and what enters them."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.host.facts import Host
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning.plan import plan_release

from .conftest import FIXTURES, RECIPES, SPARK

STACK = ["nccl", "torch", "torchvision", "torchaudio", "triton", "flashinfer", "vllm"]


def keys(plan):
    return {s.component: s.key for s in plan.steps}


def test_full_release_in_dependency_order(factory):
    plan = factory.plan(factory.release("0.15.0-t4"))
    order = [s.component for s in plan.steps]
    assert sorted(order) == sorted(STACK)
    for step in plan.steps:
        for dep in step.depends_on:
            assert order.index(dep) < order.index(step.component)
    assert order[0] == "nccl" and order[-1] == "vllm"
    assert {"transformers": "4.57.6", "ray": "2.53.0"}.items() <= plan.pins.items()
    assert "nvidia-cuda-nvcc" in plan.pins  # JIT toolkit for the runtime images
    assert all(s.action == "build" for s in plan.steps)


def test_building_torch_builds_nccl_first_and_nothing_else(factory):
    plan = factory.plan(factory.release("0.15.0-t4"), ["torch"])
    assert [s.component for s in plan.steps] == ["nccl", "torch"]


def test_unknown_target_suggests(factory):
    with pytest.raises(InputError, match="did you mean 'torch'"):
        factory.plan(factory.release("0.15.0-t4"), ["troch"])


def test_target_missing_from_release(factory):
    with pytest.raises(InputError, match=r"has no \[components.vllm\]"):
        factory.plan(factory.release("pytorch-2.10.0-cu131"), ["vllm"])


def _with(release, name, **changes):
    comps = dict(release.components)
    comps[name] = dataclasses.replace(comps[name], **changes)
    return dataclasses.replace(release, components=comps)


def test_changing_nccl_changes_every_downstream_key(factory):
    rel = factory.release("0.15.0-t4")
    before = keys(factory.plan(rel))
    after = keys(factory.plan(_with(rel, "nccl", version="2.29.3-1")))
    # Triton builds without torch or NCCL; everything else sits on nccl.
    assert {c for c in STACK if before[c] != after[c]} == set(STACK) - {"triton"}


def test_changing_vllm_changes_only_vllm(factory):
    rel = factory.release("0.15.0-t4")
    before = keys(factory.plan(rel))
    after = keys(factory.plan(_with(rel, "vllm", env={"NVCC_APPEND_FLAGS": "-lineinfo"})))
    assert {c for c in STACK if before[c] != after[c]} == {"vllm"}


def test_jobs_memory_and_cpus_change_no_key(tmp_path):
    small = Host("linux_aarch64", "/usr/local/cuda", "13.1", cpus=2, mem_available_gb=8)
    a = Factory(RECIPES, tmp_path / "wh", tmp_path / "c1", host_probe=lambda: SPARK)
    b = Factory(RECIPES, tmp_path / "wh", tmp_path / "c2", host_probe=lambda: small)
    assert keys(a.plan(a.release("0.15.0-t4"))) == keys(b.plan(b.release("0.15.0-t4")))


def test_target_platform_and_toolkit_enter_the_key(tmp_path):
    x86 = dataclasses.replace(SPARK, platform="linux_x86_64")
    a = Factory(RECIPES, tmp_path / "wh", tmp_path / "c", host_probe=lambda: SPARK)
    b = Factory(RECIPES, tmp_path / "wh", tmp_path / "c", host_probe=lambda: x86)
    assert keys(a.plan(a.release("0.15.0-t4")))["nccl"] != keys(b.plan(b.release("0.15.0-t4")))["nccl"]


def test_t4_and_t5_share_every_built_key(factory):
    assert keys(factory.plan(factory.release("0.15.0-t4"))) == keys(factory.plan(factory.release("0.15.0-t5")))


def test_source_dir_key_ignores_the_path_but_not_the_content(factory, tmp_path):
    rel = factory.release("0.15.0-t4")
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(FIXTURES / "nccl-standin", one)
    shutil.copytree(FIXTURES / "nccl-standin", two)
    k1 = keys(factory.plan(rel, ["nccl"], source_dirs=[f"nccl={one}"]))["nccl"]
    k2 = keys(factory.plan(rel, ["nccl"], source_dirs=[f"nccl={two}"]))["nccl"]
    assert k1 == k2
    (two / "src" / "collectives.cu").write_text("// changed\n")
    assert keys(factory.plan(rel, ["nccl"], source_dirs=[f"nccl={two}"]))["nccl"] != k1


def test_cli_env_enters_the_key_of_that_component_only(factory):
    rel = factory.release("0.15.0-t4")
    base = factory.plan(rel, ["torch"])
    withenv = factory.plan(rel, ["torch"], env=["nccl:ONLY_FUNCS=AllReduce Sum f32 RING SIMPLE|SendRecv"])
    assert withenv.step("nccl").env["ONLY_FUNCS"] == "AllReduce Sum f32 RING SIMPLE|SendRecv"
    assert keys(base)["nccl"] != keys(withenv)["nccl"]


@pytest.mark.parametrize("bad", ["nccl", "nccl:ONLY_FUNCS", ":X=1"])
def test_bad_env_option(factory, bad):
    with pytest.raises(InputError, match="COMPONENT:KEY=VALUE"):
        factory.plan(factory.release("0.15.0-t4"), env=[bad])


def test_cached_steps_are_marked(factory):
    rel = factory.release("0.15.0-t4")
    plan = factory.plan(rel, ["torch"])
    nccl_key = plan.step("nccl").key
    cached = plan_release(rel, factory.recipes, plan.target, ["torch"], is_cached=lambda k: k == nccl_key)
    assert [s.action for s in cached.steps] == ["cached", "build"]


def test_plan_json_is_stable_and_path_free(factory):
    plan = factory.plan(factory.release("0.15.0-t4"))
    text = json.dumps(plan.to_json(), sort_keys=True)
    assert text == json.dumps(factory.plan(factory.release("0.15.0-t4")).to_json(), sort_keys=True)
    assert str(factory.cache_dir) not in text and str(factory.wheelhouse_dir) not in text
    step = plan.to_json()["steps"][0]
    assert set(step) >= {"component", "version", "action", "key", "depends_on", "source", "env", "outputs"}
    assert step["env"]["NVCC_GENCODE"] == "-gencode=arch=compute_121,code=sm_121"


def test_adopting_torch_changes_its_key_and_everything_downstream(factory):
    rel = factory.release("0.15.0-t4")
    before = keys(factory.plan(rel))
    plan = factory.plan(rel, adopt=["torch=torch==2.10.0"])
    after = keys(plan)
    assert plan.step("torch").action == "adopt" and plan.step("torch").adopt == "torch==2.10.0"
    assert plan.step("torch").env == {}
    assert {c for c in STACK if before[c] != after[c]} == {"torch", "torchvision", "torchaudio", "flashinfer", "vllm"}


def test_bad_adopt_option(factory):
    with pytest.raises(InputError, match="COMPONENT=WHEEL"):
        factory.plan(factory.release("0.15.0-t4"), adopt=["torch"])


def test_a_version_the_recipe_data_does_not_know_is_bad_input(factory, tmp_path):
    user = tmp_path / "u.toml"
    user.write_text('extends = "0.15.0-t4"\n[components.vllm]\nversion = "0.17.0"\n')  # no data entry
    with pytest.raises(InputError, match=r'recipes/data/vllm.toml has no \["0.17.0"\]'):
        factory.plan(factory.release(str(user)))
