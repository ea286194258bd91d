"""Release loading: the shipped matrix, `extends`, and every kind of bad input."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.planning.recipe import load_recipes
from wheelfactory.planning.release import list_releases, load_release

from .conftest import MINIMAL_RELEASE, RECIPES

MATRIX = {
    # release: (vllm, torch, vision, audio, cuda, nccl, triton, flashinfer, transformers)
    "0.15.0-t4": ("0.15.0", "2.10.0", "0.25.0", "2.10.0", "13.1.0", "2.29.2-1", "3.5.1", "0.6.2", "4.57.6"),
    "0.15.0-t5": ("0.15.0", "2.10.0", "0.25.0", "2.10.0", "13.1.0", "2.29.2-1", "3.5.1", "0.6.2", "5.0.0"),
    "0.14.1-t4": ("0.14.1", "2.10.0", "0.25.0", "2.10.0", "13.1.0", "2.29.2-1", "3.5.1", "0.6.2", "4.57.6"),
    "0.14.1-t5": ("0.14.1", "2.10.0", "0.25.0", "2.10.0", "13.1.0", "2.29.2-1", "3.5.1", "0.6.2", "5.0.0"),
    "0.13.0-t4": ("0.13.0", "2.9.1", "0.24.1", "2.9.1", "13.0.2", "2.28.9-1", "3.5.1", "0.6.1", "4.57.5"),
}


@pytest.fixture(scope="module")
def recipes():
    return load_recipes(RECIPES)


def load(name: str, recipes) -> object:
    return load_release(name, recipes, RECIPES)


def test_every_shipped_release_loads(recipes):
    names = list_releases(RECIPES)
    assert set(MATRIX) | {"pytorch-2.10.0-cu131"} <= set(names)
    for name in names:
        rel = load(name, recipes)
        assert rel.target.cuda_arch_list == ("12.1a",)
        assert rel.target.python == "3.12"


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_matrix_versions(name, recipes):
    rel = load(name, recipes)
    got = tuple(rel.version_of(c) for c in ("vllm", "torch", "torchvision", "torchaudio")) + (rel.target.cuda,) + \
        tuple(rel.version_of(c) for c in ("nccl", "triton", "flashinfer", "transformers"))
    assert got == MATRIX[name]
    assert rel.image["kind"] == "vllm"
    assert rel.pins["ray"]


def test_pytorch_base_release(recipes):
    rel = load("pytorch-2.10.0-cu131", recipes)
    assert set(rel.components) == {"nccl", "torch", "torchvision", "torchaudio"}
    assert rel.image["kind"] == "pytorch"


def test_t5_differs_from_t4_only_in_transformers(recipes):
    t4, t5 = load("0.15.0-t4", recipes), load("0.15.0-t5", recipes)
    assert t4.components == t5.components
    assert t4.target == t5.target
    assert {k: v for k, v in t4.pins.items() if k != "transformers"} == \
        {k: v for k, v in t5.pins.items() if k != "transformers"}
    assert (t4.pins["transformers"], t5.pins["transformers"]) == ("4.57.6", "5.0.0")
    assert "transformers<5" in t5.overrides["transformers"] and not t4.overrides


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = MINIMAL_RELEASE


def test_release_by_path_and_user_extends(tmp_path, recipes):
    p = write(tmp_path, 'extends = "0.15.0-t4"\n[components.vllm]\nversion = "0.16.0"\n'
                        '[components.nccl.source]\ngit = "https://github.com/zyang-dev/nccl.git"\n'
                        'ref = "dgxspark-3node-ring"\n')
    rel = load(str(p), recipes)
    assert rel.components["vllm"].version == "0.16.0"
    assert rel.components["nccl"].version == "2.29.2-1"  # inherited
    assert rel.components["nccl"].source.describe() == "https://github.com/zyang-dev/nccl.git@dgxspark-3node-ring"
    assert rel.pins["transformers"] == "4.57.6"


@pytest.mark.parametrize("text, expected", [
    ('descripton = "x"\n' + BASE, "{p}: unknown top-level key 'descripton' (did you mean 'description'?); "
     "expected one of: components, description, extends, image, overrides, pins, target"),
    (BASE + '[components.vlm]\nversion = "0.15.0"\n', "{p}: unknown component 'vlm' (did you mean 'vllm'?); "
     "known components: flashinfer, nccl, sgl_kernel, torch, torchaudio, torchvision, triton, vllm"),
    (BASE + '[components.torch]\nversion = "2.10.0"\nverison = "1"\n',
     "{p} [components.torch]: unknown key 'verison' (did you mean 'version'?); "
     "expected one of: adopt, env, extra_sources, keep_debug, options, source, version"),
    (BASE + '[components.torch]\nversion = "two point ten"\n',
     "{p} [components.torch].version: bad version 'two point ten': a version is ASCII letters, digits and "
     "punctuation without spaces, e.g. 2.10.0 (full-width digits are not digits here)"),
    (BASE.replace('"2.29.2-1"', '"2.29.2"'),
     "{p} [components.nccl].version: bad version '2.29.2': expected the form \\d+\\.\\d+\\.\\d+-\\d+"),
    (BASE.replace('python = "3.12"\n', ""), "{p} [target]: missing key 'python' (e.g. python = '3.12', "
     "cuda = '13.1.0', cuda_arch_list = ['12.1a'], platform = 'linux_aarch64')"),
    (BASE.replace('["12.1a"]', '["sm_121"]'), "{p} [target].cuda_arch_list: bad CUDA arch 'sm_121': expected "
     "MAJOR.MINOR with an optional a/f suffix and +PTX, e.g. '12.1a', '9.0', '12.0f', '8.0+PTX'"),
    (BASE + '[components.torch]\nversion = "2.10.0"\nsource = { git = "x", tag = "v1" }\n',
     "{p} [components.torch].source: unknown key 'tag' in a git source; "
     "allowed: allow_insecure, follow, git, ref, submodules"),
    (BASE + '[components.torch]\nversion = "2.10.0"\nsource = { url = "https://x.invalid/x", sha256 = "abc" }\n',
     "{p} [components.torch].source.sha256: expected 64 lowercase hex digits, got 'abc'"),
    (BASE + '[components.torch]\nversion = "2.10.0"\nsource = { path = "/nonexistent/x" }\n',
     "{p} [components.torch].source: source directory '/nonexistent/x' does not exist"),
    (BASE + '[components.torch]\nversion = "2.10.0"\nenv = { MAX_JOBS = 4 }\n',
     "{p} [components.torch].env.MAX_JOBS: environment values are strings, got 4"),
    (BASE + '[pins]\ntorch = "2.10.0"\n', "{p} [pins].torch: 'torch' is a built component; set it under "
     "[components.torch]"),
    (BASE + '[pins]\ntransformers = "latest"\n',
     "{p} [pins].transformers: bad version 'latest': expected a PEP 440 version such as 2.10.0"),
    (BASE + '[image]\nkind = "vlm"\n',
     "{p} [image].kind: unknown kind 'vlm' (did you mean 'vllm'?); expected one of ['pytorch', 'vllm']"),
    (BASE + '[overrides]\ntransformers = "why"\n',
     "{p} [overrides].transformers: only a pin or a component can override; add transformers = '<version>' "
     "under [pins], or [components.transformers] with its version"),
    (BASE + '[overrides]\nnccl = ""\n',
     "{p} [overrides].nccl: an override needs its reason, a non-empty string saying why nccl 2.29.2-1 wins over "
     "what other packages declare; got ''"),
    (BASE + '[overrides]\nnccl = "   "\n',
     "{p} [overrides].nccl: an override needs its reason, a non-empty string saying why nccl 2.29.2-1 wins over "
     "what other packages declare; got '   '"),
    (BASE + '[pins]\nray = "2.53.0"\n[overrides]\nray = true\n',
     "{p} [overrides].ray: an override needs its reason, a non-empty string saying why ray 2.53.0 wins over "
     "what other packages declare; got True"),
    (BASE + '[overrides]\nnccl = { version = "2.30.7-1" }\n',
     "{p} [overrides].nccl: an override is the reason as a string (the version is the component's), e.g. "
     'nccl = "vLLM pins nccl==X; this release runs Y"'),
    ('extends = "0.15.0-t9"\n', "{p}: extends: unknown release '0.15.0-t9' (did you mean '0.15.0-t5'?); "
     "`wheelfactory list` shows the releases, or pass a path to a TOML file"),
])
def test_bad_input_message_names_file_and_key(tmp_path, recipes, text, expected):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load(str(p), recipes)
    assert str(e.value) == expected.format(p=p)


def test_bad_toml_names_the_file_and_the_parser_error(tmp_path, recipes):
    text = BASE + "[components\n"
    with pytest.raises(tomllib.TOMLDecodeError) as parser:  # the parser's own words, as the oracle
        tomllib.loads(text)
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load(str(p), recipes)
    assert str(e.value) == f"{p}: not valid TOML: {parser.value}"


def test_extends_cycle_is_rejected(tmp_path, recipes):
    write(tmp_path, 'extends = "b"\n' + BASE, "a.toml")
    write(tmp_path, 'extends = "a"\n', "b.toml")
    with pytest.raises(InputError, match="cycle"):
        load(str(tmp_path / "a.toml"), recipes)


def test_unknown_release_name_suggests(recipes):
    with pytest.raises(InputError, match=r"did you mean '0\.15\.0-t[45]'"):
        load("0.15.0-t", recipes)


def test_recipe_dependency_cycle_is_rejected(tmp_path):
    for name, dep in (("a", "b"), ("b", "c"), ("c", "a")):
        (tmp_path / f"{name}.py").write_text(
            "from wheelfactory.planning.recipe import Recipe\n"
            f"RECIPE = Recipe(name={name!r}, summary='', source=None, outputs=({name!r},), depends_on=({dep!r},))\n")
    with pytest.raises(InputError, match="dependency cycle between recipes: a -> b -> c -> a"):
        load_recipes(tmp_path)


def test_recipe_name_must_match_file(tmp_path):
    (tmp_path / "x.py").write_text("from wheelfactory.planning.recipe import Recipe\n"
                                   "RECIPE = Recipe(name='y', summary='', source=None, outputs=('y',))\n")
    with pytest.raises(InputError, match="must match the file name"):
        load_recipes(tmp_path)


def test_a_component_override_carries_its_reason_and_the_components_version(tmp_path, recipes):
    p = write(tmp_path, 'extends = "0.33.0-t5"\n[components.torch]\nversion = "2.14.1"\nadopt = "torch==2.14.1"\n'
                        '[overrides]\ntorch = "  vLLM pins torch==2.14.0; the official 2.14.1 wheel is adopted  "\n')
    rel = load(str(p), recipes)
    assert rel.overrides == {"torch": "vLLM pins torch==2.14.0; the official 2.14.1 wheel is adopted"}
    assert rel.override_table() == {"torch": {
        "kind": "component", "version": "2.14.1",
        "reason": "vLLM pins torch==2.14.0; the official 2.14.1 wheel is adopted"}}


def test_overrides_of_pins_and_components_are_inherited_and_merged(tmp_path, recipes):
    write(tmp_path, 'extends = "0.15.0-t5"\n[overrides]\ntriton = "torch 2.10.0 wants another triton"\n',
          name="parent.toml")
    p = write(tmp_path, 'extends = "parent.toml"\n')
    table = load(str(p), recipes).override_table()
    assert sorted(table) == ["transformers", "triton"]
    assert table["transformers"]["kind"] == "pin" and table["transformers"]["version"] == "5.0.0"
    assert table["triton"] == {"kind": "component", "version": "3.5.1", "reason": "torch 2.10.0 wants another triton"}


def test_the_arch_list_is_kept_as_parsed_one_arch_per_entry(tmp_path, recipes):
    p = write(tmp_path, BASE.replace('["12.1a"]', '[" 9.0a;12.1a", "12.0+PTX "]'))
    assert load(str(p), recipes).target.cuda_arch_list == ("9.0a", "12.1a", "12.0+PTX")
