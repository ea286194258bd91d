"""The recipe contract: hooks checked at load, options declared and validated, data files
declared and keyed, the engine's code keyed, adopted components asking nothing of build data."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import textwrap
from pathlib import Path

import pytest

from wheelfactory.core.codehash import data_digest
from wheelfactory.core.errors import InputError
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning import plan as plan_module
from wheelfactory.planning.recipe import Option, load_recipes, recipe_data, version_table

from .conftest import MINIMAL_RELEASE, RECIPES, SPARK, invoke

HEADER = ("from wheelfactory.planning.recipe import Recipe\n"
          "RECIPE = Recipe(name='x', summary='', source=None, outputs=('x',))\n")


def recipe_dir(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "x.py").write_text(header + textwrap.dedent(body))
    return d


def load_refusal(tmp_path: Path, body: str = "", header: str = HEADER) -> str:
    """What loading recipes/x.py (header + body) is refused with, after the file name every such
    message starts with."""
    d = recipe_dir(tmp_path, body, header)
    with pytest.raises(InputError) as e:
        load_recipes(d)
    prefix = f"{d / 'x.py'}: "
    assert str(e.value).startswith(prefix), str(e.value)
    return str(e.value).removeprefix(prefix)


# -- hooks ---------------------------------------------------------------------------------------

def test_misspelt_hook_is_refused_with_did_you_mean(tmp_path):
    assert load_refusal(tmp_path, "def prepair(ctx):\n    pass\n") == (
        "def prepair(ctx) is not a recipe hook (did you mean 'prepare'?)")


def test_public_helper_must_start_with_underscore(tmp_path):
    assert load_refusal(tmp_path, "def kernels_on(spec):\n    return True\n") == (
        "def kernels_on(spec) is not a recipe hook (hooks: environment, requirements, extra_sources, fetch, "
        "prepare, configure, build); name a helper with a leading underscore, e.g. _kernels_on")


def test_hook_taking_two_arguments_is_refused(tmp_path):
    d = recipe_dir(tmp_path, "def configure(ctx, extra):\n    pass\n")
    with pytest.raises(InputError, match=r"def configure\(ctx, extra\): the configure hook takes exactly one"):
        load_recipes(d)


def test_private_helpers_imports_and_constants_are_allowed(tmp_path):
    d = recipe_dir(tmp_path, """
        from pathlib import Path          # imported callables are not the module's own
        TABLE = {"a": 1}
        def _helper(x, y):
            return x
        def configure(ctx):
            _helper(ctx, 1)
        """)
    loaded = load_recipes(d)["x"]
    assert loaded.hook("configure") is loaded.module.configure
    assert loaded.hook("prepare") is None


def test_asking_for_an_unknown_hook_name_is_a_programming_error(tmp_path):
    loaded = load_recipes(recipe_dir(tmp_path, ""))["x"]
    with pytest.raises(ValueError, match="'prepair' is not a recipe hook"):
        loaded.hook("prepair")


# -- options -------------------------------------------------------------------------------------

def test_shipped_recipes_declare_the_options_they_read():
    recipes = load_recipes(RECIPES)
    declared = {n: {o.name: (o.type, o.default) for o in lr.recipe.options} for n, lr in recipes.items()}
    assert declared["vllm"] == {"kernels": (bool, True), "rust_frontend": (bool, True)}
    assert declared["flashinfer"] == {"cubin": (bool, False), "jit_cache": (bool, False)}
    assert all(not declared[n] for n in ("nccl", "torch", "torchvision", "torchaudio", "triton"))


def test_option_default_must_have_its_type():
    with pytest.raises(InputError, match=r"Option\('kernels'\)"):
        Option("kernels", bool, "yes", "help")


BASE = MINIMAL_RELEASE


@pytest.fixture
def factory(tmp_path) -> Factory:
    return Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK)


def release_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.toml"
    p.write_text(BASE + text)
    return p


@pytest.mark.parametrize("text, expected", [
    ('[components.vllm]\nversion = "0.15.0"\noptions = { kernel = false }\n',
     "{p} [components.vllm] options.kernel: unknown option 'kernel' (did you mean 'kernels'?); "
     "vllm options: kernels, rust_frontend (`wheelfactory list --options`)"),
    ('[components.vllm]\nversion = "0.15.0"\noptions = { kernels = "false" }\n',
     "{p} [components.vllm] options.kernels: expected true or false, got 'false'"),
    ('[components.flashinfer]\nversion = "0.6.2"\noptions = { cubin = 1 }\n',
     "{p} [components.flashinfer] options.cubin: expected true or false, got 1"),
    ('[components.torch]\nversion = "2.10.0"\noptions = { cuda = true }\n',
     "{p} [components.torch] options.cuda: unknown option 'cuda'; torch options: none "
     "(`wheelfactory list --options`)"),
    ('[components.torch]\nversion = "2.10.0"\nkeep_debug = "no"\n',
     "{p} [components.torch].keep_debug: expected true or false, got 'no'"),
])
def test_bad_options_are_refused_at_load(tmp_path, factory, text, expected):
    p = release_file(tmp_path, text)
    with pytest.raises(InputError) as e:
        factory.release(str(p))
    assert str(e.value) == expected.format(p=p)


def test_option_typo_exits_2_through_the_cli(tmp_path):
    p = release_file(tmp_path, '[components.vllm]\nversion = "0.15.0"\noptions = { kernel = false }\n')
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "plan", "-r", str(p))
    assert r.returncode == 2
    assert "options.kernel: unknown option 'kernel' (did you mean 'kernels'?)" in r.stderr
    assert "Traceback" not in r.stderr


def test_defaults_are_filled_in_and_keyed(tmp_path, factory):
    # jit_cache, not cubin: a Spark release refuses cubin (no prebuilt cubins for 12.x; test_recipe_flags)
    p = release_file(tmp_path, '[components.flashinfer]\nversion = "0.6.2"\noptions = { jit_cache = true }\n'
                               '[components.torch]\nversion = "2.10.0"\n')
    rel = factory.release(str(p))
    assert dict(rel.components["flashinfer"].options) == {"cubin": False, "jit_cache": True}
    assert dict(rel.components["torch"].options) == {}
    plan = factory.plan(rel, ["flashinfer"])
    assert plan.step("flashinfer").key_inputs["options"] == {"cubin": False, "jit_cache": True}


def test_writing_a_default_out_keeps_the_key_and_changing_it_rekeys(tmp_path, factory):
    rel = factory.release("0.15.0-t4")
    implicit = factory.plan(rel).step("vllm").key
    explicit = _with_options(rel, "vllm", {"kernels": True, "rust_frontend": True})
    off = _with_options(rel, "vllm", {"kernels": False, "rust_frontend": True})
    assert factory.plan(explicit).step("vllm").key == implicit
    assert factory.plan(off).step("vllm").key != implicit


def _with_options(rel, name, options):
    comps = dict(rel.components)
    comps[name] = dataclasses.replace(comps[name], options=options)
    return dataclasses.replace(rel, components=comps)


def test_list_options_shows_each_declared_option():
    r = invoke("list", "--options")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert ("      options.kernels (bool, default true): false: VLLM_TARGET_DEVICE=empty, a pure-Python wheel "
            "without CUDA kernels (CI, plan-only checks)") in lines
    assert any(line.startswith("      options.jit_cache (bool, default false): ") for line in lines)
    assert "options." not in invoke("list").stdout


# -- data files ----------------------------------------------------------------------------------

DATA_HEADER = ("from wheelfactory.planning.recipe import Recipe, recipe_data\n"
               "RECIPE = Recipe(name='x', summary='', source=None, outputs=('x',), data_files=('x.toml',))\n")


def test_reading_an_undeclared_data_file_is_refused(tmp_path):
    d = recipe_dir(tmp_path, "", header=DATA_HEADER)
    (d / "data").mkdir()
    (d / "data" / "x.toml").write_text('[a]\nb = 1\n')
    (d / "data" / "y.toml").write_text('[a]\nb = 2\n')
    recipe = load_recipes(d)["x"].recipe
    assert recipe_data(recipe, d / "x.py", "x.toml") == {"a": {"b": 1}}
    with pytest.raises(InputError) as e:
        recipe_data(recipe, d / "x.py", "y.toml")
    assert str(e.value) == (f"{d / 'x.py'}: reads recipes/data/y.toml, which RECIPE does not declare "
                            "(data_files: x.toml) (did you mean 'x.toml'?); add it to Recipe(data_files=...) "
                            "so that it enters the build key")
    with pytest.raises(InputError, match="does not declare"):
        version_table(recipe, d / "x.py", "y.toml", "a", "hint")


def test_a_declared_data_file_must_exist(tmp_path):
    assert load_refusal(tmp_path, header=DATA_HEADER) == (
        f"RECIPE.data_files names 'x.toml', and {tmp_path / 'recipes' / 'data' / 'x.toml'} does not exist")


def test_data_file_digests_enter_the_key(factory):
    inputs = factory.plan(factory.release("0.15.0-t4"), ["vllm"]).step("vllm").key_inputs
    expected = {n: data_digest(RECIPES / "data" / n) for n in ("vllm.toml", "vllm_kernels.toml")}
    assert inputs["recipe"]["data"] == expected
    # their data, not their bytes (both files carry comments)
    raw = {n: hashlib.sha256((RECIPES / "data" / n).read_bytes()).hexdigest() for n in expected}
    assert all(expected[n] != raw[n] for n in expected)


def test_editing_a_data_file_rekeys_exactly_its_recipe(tmp_path):
    copy = tmp_path / "recipes"
    shutil.copytree(RECIPES, copy)
    before = Factory(copy, tmp_path / "wh", tmp_path / "c1", host_probe=lambda: SPARK)
    keys_before = {s.component: s.key for s in before.plan(before.release("0.15.0-t4")).steps}
    kernels = copy / "data" / "vllm_kernels.toml"
    kernels.write_text(kernels.read_text() + "\n# a comment: no rebuild\n")
    commented = Factory(copy, tmp_path / "wh", tmp_path / "c2", host_probe=lambda: SPARK)
    assert {s.component: s.key for s in commented.plan(commented.release("0.15.0-t4")).steps} == keys_before
    kernels.write_text(kernels.read_text() + "\n[a_policy_edit]\nallow = true\n")
    after = Factory(copy, tmp_path / "wh", tmp_path / "c3", host_probe=lambda: SPARK)
    keys_after = {s.component: s.key for s in after.plan(after.release("0.15.0-t4")).steps}
    assert {c for c in keys_before if keys_before[c] != keys_after[c]} == {"vllm"}


def test_engine_digest_enters_every_key(factory, monkeypatch):
    rel = factory.release("0.15.0-t4")
    before = {s.component: s.key for s in factory.plan(rel).steps}
    assert {s.key_inputs["engine"] for s in factory.plan(rel).steps} == {plan_module.engine_sha256()}
    monkeypatch.setattr(plan_module, "engine_sha256", lambda: "0" * 64)
    after = {s.component: s.key for s in factory.plan(rel).steps}
    assert all(before[c] != after[c] for c in before)


def test_engine_modules_exist_and_shape_wheels():
    """The declared list, with buildenv.py (SOURCE_DATE_EPOCH, the CUDA compiler variables) and the
    other modules of the executor split that decide a build's commands, environment or venv;
    tests/test_codehash.py checks that every module they or a recipe import was decided on."""
    package = Path(plan_module.__file__).parents[1]  # wheelfactory/: the names are import names below it
    assert {m.rpartition(".")[2] for m in plan_module.ENGINE_MODULES} == {
        "buildenv", "cargo", "context", "crossbuild", "installer", "patches", "provenance", "pydeps", "repair",
        "stepbuild", "wheelpack"}
    assert all((package / f"{m.replace('.', '/')}.py").is_file() for m in plan_module.ENGINE_MODULES)


# -- adopted components need no build data -------------------------------------------------------

def test_adopting_versions_without_build_data_plans(tmp_path, factory):
    p = release_file(tmp_path, '[components.triton]\nversion = "3.6.0"\nadopt = "triton==3.6.0"\n'
                               '[components.vllm]\nversion = "0.33.0"\nadopt = "vllm==0.33.0"\n'
                               '[components.torch]\nversion = "2.10.0"\nadopt = "torch==2.10.0"\n'
                               '[components.flashinfer]\nversion = "0.6.2"\nadopt = "flashinfer-python==0.6.2"\n')
    plan = factory.plan(factory.release(str(p)), ["vllm"])
    vllm = plan.step("vllm")
    assert vllm.action == "adopt" and vllm.env == {} and vllm.extra_sources == {}
    assert plan.step("triton").action == "adopt"
    # The same versions, built, need their data tables: the hooks do run for a build.
    with pytest.raises(InputError, match=r'recipes/data/triton.toml has no \["3.6.0"\]'):
        _plan_built(factory, str(p), "triton")


def _plan_built(factory, path, name):
    rel = factory.release(path)
    comps = dict(rel.components)
    comps[name] = dataclasses.replace(comps[name], adopt=None)
    return factory.plan(dataclasses.replace(rel, components=comps), [name])


def test_hooks_are_not_called_for_an_adopted_step(tmp_path):
    header = ("from wheelfactory.planning.recipe import Recipe\n"
              "from wheelfactory.sources.kinds import PypiSource\n"
              "RECIPE = Recipe(name='x', summary='', source=PypiSource('x'), outputs=('x',))\n")
    d = recipe_dir(tmp_path, """
        def environment(spec):
            raise RuntimeError("environment called")
        def requirements(spec):
            raise RuntimeError("requirements called")
        def extra_sources(spec):
            raise RuntimeError("extra_sources called")
        """, header=header)
    (d / "releases").mkdir()
    (d / "releases" / "r.toml").write_text('[target]\npython = "3.12"\ncuda = "13.1.0"\ncuda_arch_list = ["12.1a"]\n'
                                           'platform = "linux_aarch64"\n[components.x]\nversion = "1.0"\n'
                                           'adopt = "x==1.0"\n')
    f = Factory(d, tmp_path / "wh", tmp_path / "c", host_probe=lambda: SPARK, system_cuda=True)
    rel = f.release("r")
    assert f.plan(rel).step("x").action == "adopt"
    built = dataclasses.replace(rel, components={"x": dataclasses.replace(rel.components["x"], adopt=None)})
    with pytest.raises(RuntimeError, match="environment called"):
        f.plan(built)


# -- host estimates: declared by the recipe, not keyed -------------------------------------------

def test_a_disk_estimate_is_the_recipes_and_changes_no_key(tmp_path):
    copy = tmp_path / "recipes"
    shutil.copytree(RECIPES, copy)
    before = Factory(copy, tmp_path / "wh", tmp_path / "c1", host_probe=lambda: SPARK)
    steps_before = {s.component: s for s in before.plan(before.release("0.15.0-t4")).steps}
    torch = copy / "torch.py"
    torch.write_text(torch.read_text().replace("disk_gb=40.0", "disk_gb=55.0"))
    after = Factory(copy, tmp_path / "wh", tmp_path / "c2", host_probe=lambda: SPARK)
    steps_after = {s.component: s for s in after.plan(after.release("0.15.0-t4")).steps}
    assert (steps_before["torch"].disk_gb, steps_after["torch"].disk_gb) == (40.0, 55.0)
    assert {c: s.key for c, s in steps_before.items()} == {c: s.key for c, s in steps_after.items()}
    assert "disk_gb" not in steps_after["torch"].key_inputs["recipe"]["declaration"]


def test_a_disk_estimate_by_option(factory, tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(MINIMAL_RELEASE + '[components.torch]\nversion = "2.10.0"\n'
                 '[components.flashinfer]\nversion = "0.6.2"\noptions = { jit_cache = true }\n')
    assert factory.plan(factory.release(str(p)), ["flashinfer"]).step("flashinfer").disk_gb == 10.0
    p.write_text(p.read_text().replace("jit_cache = true", "jit_cache = false"))
    assert factory.plan(factory.release(str(p)), ["flashinfer"]).step("flashinfer").disk_gb == 2.0


def test_a_disk_estimate_names_a_declared_option(tmp_path):
    header = HEADER.replace("outputs=('x',))", "outputs=('x',), disk_gb_if=(('kernel', False, 1.0),))")
    assert load_refusal(tmp_path, header=header) == (
        "RECIPE names option 'kernel' in a host estimate, which RECIPE.options does not declare")


def test_a_gcc_need_is_checked_at_load(tmp_path):
    header = ("from wheelfactory.recipe_api import GccNeed, Recipe\n"
              "RECIPE = Recipe(name='x', summary='', source=None, outputs=('x',), "
              "gcc_needs=(GccNeed('0.33+', 13, 'why'),))\n")
    assert load_refusal(tmp_path, header=header) == (
        "RECIPE.gcc_needs: '0.33+' is not a version specifier such as '>=0.33'")


def test_the_gcc_need_holds_by_version_and_option():
    vllm = load_recipes(RECIPES)["vllm"].recipe
    assert vllm.gcc_need("0.33.0", {}).gcc == 13
    assert vllm.gcc_need("0.15.0", {}) is None
    assert vllm.gcc_need("0.33.0", {"kernels": False}) is None
