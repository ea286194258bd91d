"""Build phases, --until, the configure phase's device-code check and patch files, on small
recipes of the tests' own (a stand-in source; no upstream code)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.conftest import fatbin_fixture, run_cli
from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.host.facts import Host
from wheelfactory.pipeline.factory import Factory
from wheelfactory.sources.patches import declared_patches

# Each test makes build venvs and runs the executor for real: the slow tier.
pytestmark = pytest.mark.slow

HOST = Host("linux_x86_64", None, "none", cpus=2, mem_available_gb=8.0)

# configure() writes a build.ninja as CMake would and has the context judge it; build() packs the
# (patched) source file into the wheel so a test can see what was built.
RECIPE = '''
from wheelfactory.planning.recipe import Recipe
from wheelfactory.store.wheelpack import pack_tree

RECIPE = Recipe(name="demo", summary="test", source=None, outputs=("demo",))

def configure(ctx):
    d = ctx.work / "cmake"
    d.mkdir()
    (d / "build.ninja").write_text(
        "build CMakeFiles/_C.dir/k.cu.o: CUDA_COMPILER___C_unscanned_Release /s/k.cu\\n"
        "  FLAGS = -O3 -gencode arch=compute_{code},code=sm_{code}\\n")
    ctx.check_device_code(d / "build.ninja")

def build(ctx):
    tree = ctx.work / "t"
    (tree / "demo").mkdir(parents=True)
    (tree / "demo" / "__init__.py").write_text((ctx.src / "kernel.txt").read_text())
    if (ctx.src / "lib.so").exists():
        (tree / "demo" / "lib.so").write_bytes((ctx.src / "lib.so").read_bytes())
    return [pack_tree(tree, "demo", "1.0", "py3-none-any", ctx.dist, summary="t")]
'''

PATCH = """Stand-in patch: says why, as every patch header must (upstream PR: none, a test).

--- a/kernel.txt
+++ b/kernel.txt
@@ -1 +1 @@
-KERNEL = "sm_120a"
+KERNEL = "sm_121a"
"""


def setup(tmp_path: Path, code: str = "121a", patch: str | None = None, so: str | None = None) -> Factory:
    recipes = tmp_path / "recipes"
    (recipes / "releases").mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "kernel.txt").write_text('KERNEL = "sm_120a"\n')
    if so is not None:  # a shared object with device code, from the fatbin fixtures
        shutil.copyfile(fatbin_fixture(so), src / "lib.so")
    (recipes / "demo.py").write_text(RECIPE.replace("{code}", code))
    (recipes / "releases" / "r.toml").write_text(
        "[target]\npython = '3.11'\ncuda = '13.0'\ncuda_arch_list = ['12.1a']\nplatform = 'linux_x86_64'\n"
        f"[components.demo]\nversion = '1.0'\nsource = {{ path = '{src}' }}\n")
    if patch is not None:
        (recipes / "patches" / "demo" / "1.0").mkdir(parents=True)
        (recipes / "patches" / "demo" / "1.0" / "0001-sm121.patch").write_text(patch)
        (recipes / "data").mkdir()
        (recipes / "data" / "patches.toml").write_text('["demo"."1.0"]\nsource = ["0001-sm121.patch"]\n')
    # These recipes compile nothing: the host's toolkit, not 1 GB of CUDA wheels.
    return Factory(recipes, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: HOST, system_cuda=True)


def build(f: Factory, until: str | None = None):
    plan = f.plan(f.release("r"), ["demo"])
    return f.executor(plan, echo=lambda m: None, python=shutil.which("python3"), until=until,
                      until_steps=("demo",)).build()


def test_until_configure_stops_keeps_the_tree_and_publishes_nothing(tmp_path):
    f = setup(tmp_path)
    [result] = build(f, until="configure")
    assert result.action == "until-configure"
    assert not f.wheelhouse.manifest_path.exists()
    assert list(f.wheelhouse.root.glob("*.whl")) == []
    [work] = [p for p in (f.cache_dir / "work").iterdir() if p.is_dir()]  # beside it: the key's lock file
    saved = json.loads((work / "device-code.json").read_text())
    assert saved["objects"] == 1 and saved["errors"] == []
    assert saved["families"][0]["sass"] == ["sm_121a"]
    assert not (work / "dist" / "demo-1.0-py3-none-any.whl").exists()  # the build phase never ran


def test_until_prepare_stops_before_configure(tmp_path):
    f = setup(tmp_path)
    [result] = build(f, until="prepare")
    assert result.action == "until-prepare"
    [work] = [p for p in (f.cache_dir / "work").iterdir() if p.is_dir()]  # beside it: the key's lock file
    assert (work / "src" / "kernel.txt").exists() and not (work / "device-code.json").exists()


def test_a_full_build_records_the_device_code_plan_in_the_manifest(tmp_path):
    f = setup(tmp_path)
    build(f)
    [entry] = f.wheelhouse.manifest().values()
    assert entry["device_code_plan"]["devices"] == ["12.1"]
    assert entry["device_code_plan"]["families"][0]["verdicts"] == {"12.1": {"native": 1, "jit": 0, "none": 0}}


def test_configure_fails_on_code_the_release_cannot_run(tmp_path):
    f = setup(tmp_path, code="120a")
    with pytest.raises(BuildError) as e:
        build(f)
    assert "_C:.: 1 object(s) carry only sm_120a, which no device of the release (12.1) can load" in str(e.value)
    assert not f.wheelhouse.manifest_path.exists()


def test_patches_are_applied_in_prepare_and_enter_the_key(tmp_path):
    f = setup(tmp_path, patch=PATCH)
    key_with = f.plan(f.release("r"), ["demo"]).step("demo").key
    build(f)
    [wheel] = f.wheelhouse.root.glob("demo-*.whl")
    assert zipfile.ZipFile(wheel).read("demo/__init__.py") == b'KERNEL = "sm_121a"\n'
    log = next((f.cache_dir / "logs").glob("demo-*.log")).read_text()
    assert "applied patch demo/1.0/0001-sm121.patch" in log
    # editing the patch re-keys the step
    (f.recipes_dir / "patches" / "demo" / "1.0" / "0001-sm121.patch").write_text(PATCH.replace("says why", "why"))
    f2 = Factory(f.recipes_dir, f.wheelhouse_dir, f.cache_dir, host_probe=lambda: HOST, system_cuda=True)
    assert f2.plan(f2.release("r"), ["demo"]).step("demo").key != key_with


def test_a_patch_that_does_not_apply_fails_with_its_name(tmp_path):
    f = setup(tmp_path, patch=PATCH.replace('-KERNEL = "sm_120a"', '-KERNEL = "sm_100a"'))
    with pytest.raises(BuildError) as e:
        build(f)
    assert "patch demo/1.0/0001-sm121.patch does not apply to src" in str(e.value)
    assert not f.wheelhouse.manifest_path.exists()


def test_a_declared_patch_file_that_is_missing_is_bad_input(tmp_path):
    f = setup(tmp_path, patch=PATCH)
    (f.recipes_dir / "data" / "patches.toml").write_text('["demo"."1.0"]\nsource = ["0002-gone.patch"]\n')
    with pytest.raises(InputError) as e:
        declared_patches(f.recipes_dir, "demo", "1.0")
    assert "names '0002-gone.patch', but" in str(e.value) and str(e.value).endswith("does not exist")
    (f.recipes_dir / "data" / "patches.toml").write_text('["demo"."1.0"]\nflash_attn = ["0001-sm121.patch"]\n')
    with pytest.raises(InputError, match=r"flash_attn is not a source tree of demo 1.0 \(known: source\)"):
        declared_patches(f.recipes_dir, "demo", "1.0")


def test_until_needs_targets():
    r = run_cli("build", "--until", "configure")
    assert r.returncode == 2
    assert "--until configure needs the components to stop" in r.stderr


def test_the_finished_wheel_is_audited_and_recorded(tmp_path):
    f = setup(tmp_path, so="family.so")  # sm_100f, sm_120f, compute_120f: native on 12.1 by family
    build(f)
    [entry] = f.wheelhouse.manifest().values()
    [(wheel, audit)] = entry["device_code"].items()
    assert wheel.startswith("demo-1.0")
    code = audit["objects"]["demo/lib.so"]["code"]
    assert sorted(code) == ["compute_120f", "sm_100f", "sm_120f"] and all(n > 0 for n in code.values())
    assert audit["verdict"]["objects"]["demo/lib.so"]["devices"] == {"12.1": "native"}


@pytest.mark.parametrize(("so", "problem"), [
    ("arch_specific.so", "foreign arch-specific code sm_120a"),
    ("sass_ptx.so", "only PTX (JIT) for 12.1"),
])
def test_a_wheel_that_contradicts_the_arch_list_is_not_published(tmp_path, so, problem):
    f = setup(tmp_path, so=so)
    with pytest.raises(BuildError) as e:
        build(f)
    assert f"demo/lib.so: {problem}" in str(e.value)
    assert not f.wheelhouse.manifest_path.exists()
