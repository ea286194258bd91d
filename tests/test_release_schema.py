"""The JSON Schema of release files (`wheelfactory release schema`): generated from the loader and the
recipes, committed as wheelfactory/planning/data/release.schema.json, met by every shipped release, and in
agreement with the loader on what it accepts and refuses.

To update the committed copy after a change to the loader's keys or a recipe's options:
    wheelfactory release schema > wheelfactory/planning/data/release.schema.json
(without --recipes-dir), or WHEELFACTORY_UPDATE_GOLDEN=1 python3 -m pytest tests/test_release_schema.py
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import jsonschema
import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.planning.recipe import load_recipes
from wheelfactory.planning.release import load_release
from wheelfactory.planning.release_schema import release_schema

from .conftest import CI_RELEASES, MINIMAL_RELEASE, RECIPES, REPO, invoke

COMMITTED = REPO / "wheelfactory" / "planning" / "data" / "release.schema.json"
SHIPPED = sorted((RECIPES / "releases").glob("*.toml")) + sorted(CI_RELEASES.glob("*.toml"))


@pytest.fixture(scope="module")
def recipes():
    return load_recipes(RECIPES)


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(COMMITTED.read_text())
    jsonschema.Draft7Validator.check_schema(schema)  # a schema editors and jsonschema can read
    return jsonschema.Draft7Validator(schema)


def test_committed_schema_is_the_generated_one(recipes):
    generated = json.dumps(release_schema(recipes), indent=2) + "\n"
    if os.environ.get("WHEELFACTORY_UPDATE_GOLDEN"):
        COMMITTED.write_text(generated)
        pytest.skip(f"rewrote {COMMITTED}; review `git diff {COMMITTED.relative_to(REPO)}`")
    assert COMMITTED.read_text() == generated, (
        f"{COMMITTED.relative_to(REPO)} is not what the loader and the recipes say now: regenerate it with "
        f"`wheelfactory release schema > {COMMITTED.relative_to(REPO)}` and review the diff")


def test_release_schema_command_prints_it(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "release", "schema")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(COMMITTED.read_text())


def test_release_schema_includes_the_users_recipes_and_their_options(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "demo.py").write_text(
        "from wheelfactory.planning.recipe import Option, Recipe\n"
        "RECIPE = Recipe(name='demo', summary='a demo', source=None, outputs=('demo',),\n"
        "                options=(Option('fast', bool, False, 'go fast'), Option('level', int, 3, 'how much')))\n")
    r = invoke("--recipes-dir", str(mine), "--wheelhouse", str(tmp_path / "wh"), "release", "schema")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    components = schema["properties"]["components"]["properties"]
    assert {"demo", "vllm", "nccl"} <= set(components)
    assert components["demo"]["properties"]["options"]["properties"] == {
        "fast": {"type": "boolean", "default": False, "description": "go fast"},
        "level": {"type": "integer", "default": 3, "description": "how much"}}
    v = jsonschema.Draft7Validator(schema)
    base = tomllib.loads(BASE)
    assert v.is_valid(base | {"components": {"demo": {"version": "1.0", "options": {"level": 5}}}})
    assert not v.is_valid(base | {"components": {"demo": {"version": "1.0", "options": {"level": "5"}}}})


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_release_meets_the_schema(path, validator):
    with open(path, "rb") as f:
        data = tomllib.load(f)
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(data)]
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)


BASE = MINIMAL_RELEASE

# (a release file's text, whether it is a valid release). Both the schema and the loader are asked;
# each case is one a user would type.
CASES = [
    (BASE, True),
    (BASE + '[components.vllm]\nversion = "0.15.0"\noptions = { kernels = false }\nkeep_debug = true\n', True),
    (BASE + '[components.vllm]\nversion = "0.15.0"\nenv = { MAX_JOBS = "4" }\n', True),
    (BASE + '[components.flashinfer]\nversion = "0.6.2"\nsource = { pypi = "flashinfer-python" }\n', True),
    (BASE + '[components.vllm]\nversion = "0.15.0"\nsource = { git = "https://x/v.git", ref = "main", '
            'follow = true }\n', True),
    (BASE + '[pins]\ntransformers = "4.57.6"\n[overrides]\ntransformers = "vLLM declares <5"\n', True),
    ('extends = "0.15.0-t4"\n[components.vllm]\noptions = { kernels = false }\n', True),  # version inherited
    ('extends = "0.15.0-t4"\n[pins]\ntransformers = "5.0.0"\n', True),
    # refused
    ('descripton = "x"\n' + BASE, False),  # unknown top-level key
    (BASE + '[components.vllm]\nversion = "0.15.0"\noptions = { kernels = "false" }\n', False),  # wrong type
    (BASE + '[components.flashinfer]\nversion = "0.6.2"\noptions = { cubin = 1 }\n', False),  # an int for a bool
    (BASE + '[components.vllm]\nversion = "0.15.0"\noptions = { kernel = false }\n', False),  # unknown option
    (BASE + '[components.vllm]\nversion = "0.15.0"\nkeep_debug = "no"\n', False),
    (BASE + '[components.vllm]\nversion = "0.15.0"\nenv = { MAX_JOBS = 4 }\n', False),
    (BASE + '[components.vllm]\nversion = "0.15.0"\nsurce = { pypi = "vllm" }\n', False),  # unknown key
    (BASE + '[components.vlm]\nversion = "0.15.0"\n', False),  # unknown component
    (BASE + '[components.vllm]\nversion = "0.15.0"\nsource = { pypi = "vllm", git = "https://x/v.git" }\n', False),
    (BASE + '[components.vllm]\nversion = "0.15.0"\nsource = { git = "https://x/v.git" }\n', False),  # no ref
    (BASE + '[components.vllm]\nversion = "0.15.0"\nsource = { url = "https://x/v.tgz", sha256 = "abc" }\n', False),
    (BASE + '[components.vllm]\nversion = "0.15.0"\nsource = { git = "https://x/v.git", ref = "v1", '
            'follow = "yes" }\n', False),
    (BASE + '[components.vllm]\n', False),  # no version, no extends
    (BASE.replace('version = "2.29.2-1"', 'version = "2.29.2"'), False),  # NCCL's own version form
    (BASE.replace('python = "3.12"', 'python = "3"'), False),
    (BASE.replace('python = "3.12"', 'python = "python3.12"'), False),
    (BASE.replace('cuda = "13.1.0"', 'cuda = "13"'), False),
    (BASE.replace('platform = "linux_aarch64"\n', ''), False),  # a whole release lacks a target key
    (BASE.replace('platform = "linux_aarch64"\n', 'platform = "linux_aarch64"\ngpu = "gb10"\n'), False),
    (BASE + '[image]\nkind = "sglang"\n', False),
    (BASE + '[image]\nrepo = "x/y"\n', False),
    (BASE + '[pins]\ntorch = "2.10.0"\n', False),  # a built component is not a pin
    (BASE + '[pins]\ntransformers = 4\n', False),
    ('extends = "0.15.0-t4"\n[components.vllm]\nversion = 16\n', False),
    ('extends = 15\n', False),
]


@pytest.mark.parametrize("text, valid", CASES)
def test_schema_and_loader_agree(tmp_path, recipes, validator, text, valid):
    path = tmp_path / "r.toml"
    path.write_text(text)
    errors = [e.message for e in validator.iter_errors(tomllib.loads(text))]
    assert (not errors) == valid, f"the schema {'refuses' if errors else 'accepts'} it: {errors}"
    try:
        load_release(str(path), recipes, RECIPES)
        loaded = True
    except InputError as e:
        loaded, why = False, str(e)
    assert loaded == valid, "the loader " + ("accepts it" if loaded else f"refuses it: {why}")


def test_a_path_source_meets_the_schema(tmp_path, validator):
    """`path` sources are relative to the release file: the schema accepts the form, the loader
    checks that the directory exists."""
    data = tomllib.loads(BASE + '[components.vllm]\nversion = "0.15.0"\nsource = { path = "src/vllm" }\n'
                        '[components.vllm.extra_sources]\ncutlass = { path = "~/src/cutlass" }\n')
    assert validator.is_valid(data)
    data["components"]["vllm"]["extra_sources"]["cutlass"] = {"path": "x", "sha256": "0" * 64}
    assert not validator.is_valid(data)


def test_the_schema_file_ships_in_the_package():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["wheelfactory.planning"]
    assert any(Path(COMMITTED.relative_to(REPO / "wheelfactory" / "planning")).match(pattern) for pattern in data)
