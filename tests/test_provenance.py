"""Provenance inside each built wheel (<dist-info>/wheelfactory.json): written after repair with
RECORD regenerated, free of timestamps and machine paths, so two builds of one key give the same
bytes; adopted wheels are published untouched."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from wheel.wheelfile import WheelFile

from tests.conftest import run_cli
from wheelfactory.core.errors import BuildError
from wheelfactory.cuda import audit
from wheelfactory.host.facts import Host
from wheelfactory.pipeline.factory import Factory
from wheelfactory.pipeline.provenance import FILENAME, build_provenance, render_provenance, stamp_wheel
from wheelfactory.store.wheelpack import add_dist_info_file, pack_tree

HOST = Host(f"linux_{platform.machine()}", None, "none", cpus=2, mem_available_gb=8.0)

# A platform wheel through the whole repair path: a gcc-built shared object (stripped, then
# retagged by auditwheel), as NCCL's wheel goes.
RECIPE = '''
from wheelfactory.planning.recipe import Recipe, Repair
from wheelfactory.store.wheelpack import pack_tree

RECIPE = Recipe(name="demo", summary="test", source=None, outputs=("demo",), repair=Repair(mode="retag"))

def build(ctx):
    tree = ctx.work / "t"
    (tree / "demo").mkdir(parents=True)
    (tree / "demo" / "__init__.py").write_text((ctx.src / "demo.py").read_text())
    ctx.run(["gcc", "-shared", "-fPIC", "-O2", "-o", tree / "demo" / "_lib.so", ctx.src / "lib.c"])
    return [pack_tree(tree, "demo", "1.0", "py3-none-" + ctx.target.platform, ctx.dist, summary="t")]
'''


def setup(root: Path) -> Factory:
    """A recipe directory with the demo recipe and a release building it from a local source."""
    recipes, src = root / "recipes", root / "src"
    (recipes / "releases").mkdir(parents=True)
    src.mkdir()
    (src / "demo.py").write_text("VALUE = 1\n")
    (src / "lib.c").write_text("int demo(void) { return 42; }\n")
    (recipes / "demo.py").write_text(RECIPE)
    (recipes / "releases" / "r.toml").write_text(
        f"[target]\npython = '{sys.version_info.major}.{sys.version_info.minor}'\ncuda = '13.0'\n"
        f"cuda_arch_list = ['12.1a']\nplatform = '{HOST.platform}'\n"
        f"[components.demo]\nversion = '1.0'\nsource = {{ path = '{src}' }}\n")
    return Factory(recipes, root / "wh", root / "cache", host_probe=lambda: HOST, system_cuda=True)


def build(f: Factory) -> Path:
    plan = f.plan(f.release("r"), ["demo"])
    f.executor(plan, echo=lambda m: None, python=sys.executable).build()
    [wheel] = f.wheelhouse.root.glob("demo-*.whl")
    return wheel


def provenance_of(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read(f"demo-1.0.dist-info/{FILENAME}"))


def verify_record(wheel: Path) -> list[str]:
    """Read every member through wheel's WheelFile, which fails on a member RECORD lacks or a hash
    that differs; the names RECORD lists."""
    with WheelFile(wheel) as wf:
        for name in wf.namelist():
            wf.read(name)
        record = wf.read(f"{wf.dist_info_path}/RECORD").decode()
    return [line.split(",")[0] for line in record.splitlines()]


def small_wheel(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "demo").mkdir(parents=True)
    (tree / "demo" / "__init__.py").write_text("X = 1\n")
    (tree / "demo" / "tool").write_text("#!/bin/sh\n")
    (tree / "demo" / "tool").chmod(0o755)
    return pack_tree(tree, "demo", "1.0", "py3-none-any", tmp_path / "dist", summary="t")


# -- the wheel rewrite (fast) ---------------------------------------------------------------------

def test_an_added_file_is_in_record_and_the_rest_is_unchanged(tmp_path):
    wheel = small_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        before = {i.filename: (zf.read(i), i.external_attr, i.date_time) for i in zf.infolist()}
    add_dist_info_file(wheel, "extra.json", b'{"a": 1}\n')
    listed = verify_record(wheel)
    with zipfile.ZipFile(wheel) as zf:
        after = {i.filename: (zf.read(i), i.external_attr, i.date_time) for i in zf.infolist()}
        assert zf.namelist()[-1] == "demo-1.0.dist-info/RECORD"
    assert after.pop("demo-1.0.dist-info/extra.json")[0] == b'{"a": 1}\n'
    record = "demo-1.0.dist-info/RECORD"
    assert {k: v for k, v in after.items() if k != record} == {k: v for k, v in before.items() if k != record}
    assert sorted(listed) == sorted([*after, "demo-1.0.dist-info/extra.json"])


def test_adding_again_replaces_and_the_same_input_gives_the_same_bytes(tmp_path):
    wheel = small_wheel(tmp_path)
    twin = tmp_path / "twin.whl"
    shutil.copyfile(wheel, twin)
    for w in (wheel, twin):
        add_dist_info_file(w, "extra.json", b"one\n")
    assert wheel.read_bytes() == twin.read_bytes()
    add_dist_info_file(wheel, "extra.json", b"two\n")
    with zipfile.ZipFile(wheel) as zf:
        assert [n for n in zf.namelist() if n.endswith("extra.json")] == ["demo-1.0.dist-info/extra.json"]
        assert zf.read("demo-1.0.dist-info/extra.json") == b"two\n"
    verify_record(wheel)


def test_a_wheel_without_metadata_is_refused_and_left_as_it_was(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/__init__.py", "")
    before = wheel.read_bytes()
    with pytest.raises(BuildError, match=r"expected one \*.dist-info/METADATA in the wheel, found none"):
        add_dist_info_file(wheel, "extra.json", b"{}")
    assert wheel.read_bytes() == before and list(tmp_path.iterdir()) == [wheel]


# -- the record (fast: planning only) -------------------------------------------------------------

def test_the_record_names_key_inputs_source_and_toolchain_and_no_path(tmp_path):
    f = setup(tmp_path)
    step = f.plan(f.release("r"), ["demo"]).step("demo")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text(f"home = {tmp_path}/bin\nversion = 3.11.7\n")
    record = build_provenance(step, f.plan(f.release("r")).target, venv=venv, nvcc="13.0.88",
                              source_info={"source": str(tmp_path / "src"), "commit": "a" * 40})
    assert record["key"] == step.key and record["component"] == "demo" and record["version"] == "1.0"
    assert record["inputs"] == step.key_inputs
    assert record["source"] == dict(step.key_inputs["source"]) | {"commit": "a" * 40}
    assert record["toolchain"] == {"python": "3.11.7", "nvcc": "13.0.88", "platform": HOST.platform,
                                   "cuda_toolkit": "none"}
    assert str(tmp_path) not in render_provenance(record).decode()


def test_inspect_shows_the_key_and_the_toolchain(tmp_path):
    wheel = small_wheel(tmp_path)
    stamp_wheel(wheel, {"format": 1, "tool": "wheelfactory 0.1.0", "component": "demo", "version": "1.0",
                        "key": "k" * 64, "source": {"tree_sha256": "t"}, "toolchain": {"python": "3.11.7"},
                        "inputs": {}})
    text = audit.render(audit.audit_wheel(wheel))
    assert f"provenance: demo 1.0 built by wheelfactory 0.1.0, key {'k' * 64}" in text
    assert 'source: {"tree_sha256": "t"}' in text and "toolchain: python 3.11.7" in text


def test_an_adopted_wheel_is_published_untouched(tmp_path):
    wheel = small_wheel(tmp_path)
    f = setup(tmp_path)
    release = f.recipes_dir / "releases" / "r.toml"
    release.write_text(release.read_text().replace(f"source = {{ path = '{tmp_path / 'src'}' }}",
                                                   f"adopt = '{wheel}'"))
    plan = f.plan(f.release("r"), ["demo"])
    assert plan.step("demo").action == "adopt"
    f.executor(plan, echo=lambda m: None, python=sys.executable).build()
    [published] = f.wheelhouse.root.glob("demo-*.whl")
    assert published.read_bytes() == wheel.read_bytes()


# -- real builds (slow: a build venv, gcc, auditwheel) --------------------------------------------

@pytest.mark.slow
def test_a_built_wheel_carries_its_provenance_and_a_valid_record(tmp_path):
    f = setup(tmp_path)
    wheel = build(f)
    [entry] = f.wheelhouse.manifest().values()
    prov = provenance_of(wheel)
    assert prov["key"] == entry["key"] == f.plan(f.release("r"), ["demo"]).step("demo").key
    assert prov["inputs"] == json.loads(json.dumps(entry["inputs"]))
    assert prov["toolchain"]["python"] == platform.python_version()
    assert prov["source"]["tree_sha256"] == entry["inputs"]["source"]["tree_sha256"]
    assert str(tmp_path) not in json.dumps(prov)
    # The manifest's hash is of the stamped bytes: provenance went in before publishing.
    assert entry["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert f"demo-1.0.dist-info/{FILENAME}" in verify_record(wheel)
    unpacked = subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", tmp_path / "u", wheel],
                              capture_output=True, text=True)
    assert unpacked.returncode == 0, unpacked.stderr
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                          "--target", target, wheel], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    assert json.loads((target / "demo-1.0.dist-info" / FILENAME).read_text()) == prov
    shown = run_cli("inspect", str(wheel))
    assert shown.returncode == 0 and f"key {prov['key']}" in shown.stdout, shown.stdout + shown.stderr


@pytest.mark.slow
def test_two_builds_of_the_same_key_give_byte_identical_wheels(tmp_path):
    first, second = setup(tmp_path / "a"), setup(tmp_path / "b")  # other paths, same contents
    key = first.plan(first.release("r"), ["demo"]).step("demo").key
    assert second.plan(second.release("r"), ["demo"]).step("demo").key == key
    a, b = build(first), build(second)
    assert a.name == b.name and "manylinux" in a.name  # through strip and auditwheel's retag
    assert provenance_of(a)["key"] == key
    assert a.read_bytes() == b.read_bytes()
