"""The recipe API: recipes import one module, their hooks are typed as the Protocol says, and
docs/RECIPES.md documents what the code defines (hooks, Recipe fields, the API's names)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re

import pytest

from wheelfactory import recipe_api
from wheelfactory.core.errors import InputError
from wheelfactory.pipeline.buildenv import StepPaths, step_environment
from wheelfactory.planning.context import BuildContext, FetchContext
from wheelfactory.planning.recipe import HOOKS, NOT_KEYED, Recipe, RecipeHooks, hook_argument

from .conftest import RECIPES, REPO

GUIDE = REPO / "docs" / "RECIPES.md"
SHIPPED = sorted(RECIPES.glob("[!_]*.py"))


def factory_import_lines(path):
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            and ((getattr(node, "module", None) or "").startswith("wheelfactory")
                 or any(a.name.startswith("wheelfactory") for a in node.names))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_recipes_import_the_factory_through_recipe_api_only(path):
    modules = {getattr(node, "module", None) for node in factory_import_lines(path)}
    assert modules == {"wheelfactory.recipe_api"}, path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_hook_argument_is_typed_as_the_protocol_says(path):
    protocol = {name: inspect.signature(getattr(RecipeHooks, name)).parameters[hook_argument(name)].annotation
                for name in HOOKS}
    hooks = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name in HOOKS]
    assert hooks, path
    for hook in hooks:
        (arg,) = hook.args.args
        assert (arg.arg, ast.unparse(arg.annotation) if arg.annotation else None) == \
               (hook_argument(hook.name), protocol[hook.name]), f"{path.name}: def {hook.name}"


def test_the_protocol_names_the_contexts_the_engine_passes():
    """fetch gets a FetchContext, the other context hooks a BuildContext (stepbuild.py), the rest an EnvSpec."""
    annotations = {n: inspect.signature(getattr(RecipeHooks, n)).parameters[hook_argument(n)].annotation
                   for n in HOOKS}
    assert annotations == {"environment": "EnvSpec", "requirements": "EnvSpec", "extra_sources": "EnvSpec",
                           "fetch": FetchContext.__name__, "prepare": BuildContext.__name__,
                           "configure": BuildContext.__name__, "build": BuildContext.__name__}


def test_recipe_api_exports_what_it_imports():
    tree = ast.parse((REPO / "wheelfactory" / "recipe_api.py").read_text())
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.module != "__future__"
                for a in n.names}
    assert set(recipe_api.__all__) == imported and len(recipe_api.__all__) == len(imported)
    assert all(getattr(recipe_api, name) is not None for name in recipe_api.__all__)


# -- docs/RECIPES.md against the code -------------------------------------------------------------

def guide() -> str:
    return GUIDE.read_text()


def test_the_guide_documents_every_hook_with_its_argument():
    for name in HOOKS:
        assert re.search(rf"^#+ .*`{name}\({hook_argument(name)}\)`", guide(), re.MULTILINE), \
            f"docs/RECIPES.md has no heading for `{name}({hook_argument(name)})`"


def test_the_guide_documents_every_recipe_field():
    text = guide()
    missing = [f.name for f in dataclasses.fields(Recipe) if f"`{f.name}`" not in text]
    assert not missing, f"docs/RECIPES.md does not mention Recipe fields {missing}"


def test_the_guide_says_which_fields_stay_out_of_the_key():
    section = guide().split("## What enters the build key", 1)[1].split("\n## ", 1)[0]
    not_keyed = [f.name for f in dataclasses.fields(Recipe) if f.metadata == NOT_KEYED]
    assert not_keyed and all(f"`{name}`" in section for name in not_keyed)


def test_the_guide_documents_every_name_of_the_api():
    text = guide()
    missing = [name for name in recipe_api.__all__ if f"`{name}" not in text]
    assert not missing, f"docs/RECIPES.md does not mention {missing} (exported by wheelfactory.recipe_api)"


def test_the_guide_documents_the_build_contexts_public_members():
    text = guide()
    for cls in (BuildContext, FetchContext):
        members = {f.name for f in dataclasses.fields(cls)} | {
            n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
        missing = sorted(m for m in members if f"ctx.{m}" not in text)
        assert not missing, f"docs/RECIPES.md does not mention {cls.__name__}'s {missing} (as ctx.NAME)"


def test_the_guides_placeholders_are_the_ones_the_build_fills_in(factory, tmp_path):
    """The build names the placeholders it knows when given an unknown one: the guide's list."""
    step = factory.plan(factory.release("0.15.0-t4"), ["nccl"]).step("nccl")
    step = dataclasses.replace(step, env={"X": "${nope}"})
    paths = StepPaths(*(tmp_path / n for n in ("src", "work", "venv", "site", "cache")))
    with pytest.raises(InputError) as e:
        step_environment(step, paths, cuda_home="/cuda", jobs=1, offline=False, ccache=None,
                         trees={"llvm": tmp_path / "llvm"}, parent_path="")
    known = set(re.findall(r"\$\{(\w+)\}", str(e.value).split("known: ", 1)[1]))
    documented = set(re.findall(r"\$\{(\w+)\}", guide()))
    assert documented - {"source_NAME"} == known - {"source_llvm"} and "source_llvm" in known


def test_every_ctx_member_and_recipe_field_the_guide_names_exists():
    """The other direction: the guide names nothing the code lacks."""
    members = {m for cls in (BuildContext, FetchContext) for m in dir(cls) if not m.startswith("_")}
    members |= {f.name for cls in (BuildContext, FetchContext) for f in dataclasses.fields(cls)}
    named = set(re.findall(r"\bctx\.(\w+)", guide()))
    assert named and not named - members, f"not members of the contexts: {sorted(named - members)}"
    table_fields = set(re.findall(r"^\| `(\w+)` \|", guide(), re.MULTILINE))
    assert table_fields == {f.name for f in dataclasses.fields(Recipe)}
