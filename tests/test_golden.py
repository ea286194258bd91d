"""Golden file: what enters the build keys of one release must change only on purpose.

tests/golden/key-inputs-0.15.0-t4.json holds every step's key inputs for release 0.15.0-t4 on a
fixed target. Digests that move with every edit of a file are written as what they are the
digest of ("<canonical code digest of recipes/vllm.py>", "<key of torch>"), and this test checks
each against the file or step it names, so the golden pins both the structure and where each
digest comes from. Code enters as canonical digests (wheelfactory/core/codehash.py): a docstring,
comment or annotation edit, or a module move, leaves these key inputs as they are
(tests/test_codehash.py shows it on the real recipes and engine modules).

To change it on purpose (a new key input, a recipe's env, a pinned dependency):
    WHEELFACTORY_UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py
then read `git diff tests/golden/` line by line before committing it.
"""

from __future__ import annotations

import copy
import difflib
import json
import os

import pytest

from wheelfactory.core.codehash import code_digest, data_digest, file_digest, set_digest
from wheelfactory.planning.plan import ENGINE_MODULES, engine_files, plan_release
from wheelfactory.planning.recipe import Target, load_recipes
from wheelfactory.planning.release import load_release

from .conftest import RECIPES, REPO

GOLDEN = REPO / "tests" / "golden" / "key-inputs-0.15.0-t4.json"
# Fixed, so the golden depends on neither the host nor the toolkit pins' identity.
TARGET = Target("3.12", "13.1.0", ("12.1a",), "linux_aarch64", "wheels:13.1.0:golden")


# The engine digest recomputed from the declared modules' files, wherever they live.
ENGINE_DIGEST = set_digest(file_digest(path) for path in engine_files().values())
assert len(engine_files()) == len(ENGINE_MODULES)


def pinnable_key_inputs() -> dict:
    """The plan's key inputs with volatile digests replaced by what they digest, each checked."""
    recipes = load_recipes(RECIPES)
    plan = plan_release(load_release("0.15.0-t4", recipes, RECIPES), recipes, TARGET)
    steps = {}
    for step in plan.steps:
        inputs = copy.deepcopy(dict(step.key_inputs))
        recipe = inputs["recipe"]
        recipe["declaration"] = json.loads(recipe["declaration"])
        code = f"recipes/{step.component}.py"
        assert recipe["code"] == code_digest((REPO / code).read_bytes(), data_names=("RECIPE",))
        recipe["code"] = f"<canonical code digest of {code}>"
        for name, digest in recipe["data"].items():
            # a TOML data file enters as its parsed data (tests/test_codehash.py shows what counts)
            assert digest == data_digest(REPO / "recipes" / "data" / name)
            recipe["data"][name] = f"<data digest of recipes/data/{name}>"
        assert inputs["engine"] == ENGINE_DIGEST
        inputs["engine"] = "<canonical code digest of the engine modules>"
        for dep, key in inputs["deps"].items():
            assert key == plan.step(dep).key
            inputs["deps"][dep] = f"<key of {dep}>"
        steps[step.component] = inputs
    return {"release": plan.release.name, "order": [s.component for s in plan.steps], "steps": steps}


def test_key_inputs_match_the_golden_file():
    got = json.dumps(pinnable_key_inputs(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("WHEELFACTORY_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
        pytest.skip(f"rewrote {GOLDEN}; review `git diff {GOLDEN.relative_to(REPO)}`")
    want = GOLDEN.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            str(GOLDEN.relative_to(REPO)), "planned now"))
        pytest.fail("the key inputs of 0.15.0-t4 changed:\n" + diff +
                    "\nif on purpose: WHEELFACTORY_UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py",
                    pytrace=False)


def test_golden_file_is_what_it_claims():
    """Independent of the planner: facts of the release file and recipes the golden must show."""
    golden = json.loads(GOLDEN.read_text())
    steps = golden["steps"]
    assert golden["order"] == ["nccl", "torch", "torchvision", "torchaudio", "triton", "flashinfer", "vllm"]
    assert {c: s["version"] for c, s in steps.items()} == {
        "nccl": "2.29.2-1", "torch": "2.10.0", "torchvision": "0.25.0", "torchaudio": "2.10.0",
        "triton": "3.5.1", "flashinfer": "0.6.2", "vllm": "0.15.0"}
    assert steps["vllm"]["options"] == {"kernels": True, "rust_frontend": True}  # 0.15 has no Rust: moot
    assert steps["flashinfer"]["options"] == {"cubin": False, "jit_cache": False}
    assert steps["vllm"]["recipe"]["data"] == {"vllm.toml": "<data digest of recipes/data/vllm.toml>",
                                               "vllm_kernels.toml": "<data digest of recipes/data/vllm_kernels.toml>"}
    assert steps["vllm"]["deps"] == {d: f"<key of {d}>" for d in ("torch", "nccl", "triton", "flashinfer")}
    assert steps["nccl"]["env"]["NVCC_GENCODE"] == "-gencode=arch=compute_121,code=sm_121"
    assert all(s["target"]["toolkit"] == "wheels:13.1.0:golden" for s in steps.values())
