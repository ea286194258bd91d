"""--recipes-dir adds the user's recipes, releases and data files on top of the shipped ones; a
shipped name is replaced, nothing else is hidden. (The installed-tool path is tests/test_install.py.)"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from wheelfactory.cli.app import cli
from wheelfactory.core.errors import InputError
from wheelfactory.pipeline.factory import Factory, default_recipes_dir
from wheelfactory.planning.recipe import load_recipes

from .conftest import RECIPES, SPARK

MY_NCCL = '''
from wheelfactory.planning.recipe import Recipe

RECIPE = Recipe(name="nccl", summary="my own NCCL", source=None, outputs=("my-nccl",))
'''
MY_TOOL = '''
from wheelfactory.planning.recipe import Recipe

RECIPE = Recipe(name="mytool", summary="mine", source=None, outputs=("mytool",), depends_on=("torch",))
'''


@pytest.fixture
def mine(tmp_path):
    d = tmp_path / "mine"
    (d / "releases").mkdir(parents=True)
    (d / "nccl.py").write_text(MY_NCCL)
    (d / "mytool.py").write_text(MY_TOOL)
    (d / "releases" / "mine.toml").write_text('extends = "0.15.0-t4"\ndescription = "mine"\n')
    # Same name as a shipped release: this one wins.
    (d / "releases" / "0.15.0-t5.toml").write_text('extends = "0.15.0-t4"\ndescription = "my t5"\n')
    return d


def layered(tmp_path, mine) -> Factory:
    return Factory(mine, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK, shipped_recipes_dir=RECIPES)


def test_a_checkout_uses_its_own_recipes():
    assert default_recipes_dir() == RECIPES


def test_user_recipes_add_to_and_replace_the_shipped_ones(tmp_path, mine):
    recipes = layered(tmp_path, mine).recipes
    assert set(recipes) == set(load_recipes(RECIPES)) | {"mytool"}
    assert recipes["nccl"].recipe.outputs == ("my-nccl",) and recipes["nccl"].path == mine / "nccl.py"
    assert recipes["vllm"].path == RECIPES / "vllm.py"  # shipped, read with its own data/ and patches/
    assert recipes["mytool"].recipe.depends_on == ("torch",)  # may depend on a shipped recipe


def test_user_releases_add_to_and_replace_the_shipped_ones(tmp_path, mine):
    f = layered(tmp_path, mine)
    assert f.release("mine").description == "mine"  # extends a shipped release by name
    assert f.release("0.15.0-t5").description == "my t5"
    assert f.release("0.14.1-t5").name == "0.14.1-t5"
    with pytest.raises(InputError, match="did you mean 'mine'"):
        f.release("mien")


def test_a_data_file_of_the_user_replaces_the_shipped_one(tmp_path, mine):
    f = layered(tmp_path, mine)
    assert f.data_root("cuda_wheels.toml") == RECIPES
    (mine / "data").mkdir()
    (mine / "data" / "cuda_wheels.toml").write_text("")
    assert f.data_root("cuda_wheels.toml") == mine


def test_without_a_user_directory_only_the_shipped_one_is_read(tmp_path):
    f = Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", shipped_recipes_dir=RECIPES)
    assert f.recipes_dirs == (RECIPES,)


def test_the_cli_lists_both_and_says_so_in_help(tmp_path, mine):
    common = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, [*common, "--recipes-dir", str(mine), "list"])
    assert result.exit_code == 0, result.output
    for line in ("  mytool       mytool             torch", "  nccl         my-nccl\n", "  vllm", "  mine",
                 "  0.15.0-t4"):
        assert line in result.output
    shown = CliRunner(env={"WHEELFACTORY_RECIPES_DIR": str(mine)}).invoke(cli, [*common, "list"])
    assert "  mytool" in shown.output
    help_text = " ".join(CliRunner().invoke(cli, ["--help"]).output.split())
    assert "added on top of the shipped ones" in help_text and "replaces the shipped one" in help_text


def test_a_missing_recipes_directory_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_recipes(tmp_path / "nope", RECIPES)
