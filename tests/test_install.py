"""wheelfactory installs like a tool: its own wheel (built from the sdist, as `pip install .`, pipx
and `uv tool install` do) in a fresh venv lists, plans, builds and writes images from a directory
that is no checkout, with the recipes, releases and data it ships; --recipes-dir adds to them.

Slow: `python -m build` and the install fetch setuptools and the dependencies from the index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import CI_RELEASES, REPO, needs_nvcc

pytestmark = pytest.mark.slow

# A release of the user's own, with an image, and a recipe that replaces the shipped nccl.
TINY_RELEASE = """
[target]
python = "3.11"
cuda = "13.0"
cuda_arch_list = ["12.1a"]
platform = "linux_x86_64"

[image]
kind = "vllm"
repository = "mine/vllm"
base = "local/debian-py:bookworm"
tag = "0.0.1-t4"

[pins]
transformers = "4.57.6"
"""

MY_NCCL = '''
from wheelfactory.planning.recipe import Recipe

RECIPE = Recipe(name="nccl", summary="my own NCCL", source=None, outputs=("my-nccl",))
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The venv's bin/ of wheelfactory installed from its own wheel, built via its sdist."""
    root = tmp_path_factory.mktemp("install")
    dist = root / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", dist, REPO], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = dist.glob("wheelfactory-*.whl")
    assert len(list(dist.glob("wheelfactory-*.tar.gz"))) == 1
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True)
    pip = subprocess.run([root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheel],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return root / "venv" / "bin"


def wf(bin_dir: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `wheelfactory`, run in `cwd` with no trace of this checkout in its environment."""
    clean = {k: v for k, v in os.environ.items()
             if k != "PYTHONPATH" and (not k.startswith("WHEELFACTORY_") or k == "WHEELFACTORY_TOOLKITS_DIR")}
    return subprocess.run([bin_dir / "wheelfactory", *args], cwd=cwd, env=clean | (env or {}),
                          capture_output=True, text=True, timeout=1800)


def test_the_wheel_ships_recipes_releases_patches_and_data(installed):
    [wheel] = installed.parent.parent.glob("dist/wheelfactory-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(REPO / "recipes") for p in (REPO / "recipes").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    missing = [str(p) for p in shipped if f"wheelfactory_recipes/{p.as_posix()}" not in names]
    missing += [str(p.relative_to(REPO)) for p in [*(REPO / "wheelfactory").glob("*/data/*"),
                                                   *(REPO / "assemble" / "data").glob("*.toml")]
                if str(p.relative_to(REPO)) not in names]
    assert not missing, f"not in the wheel: {missing}"
    where = subprocess.run([installed / "python", "-c",
                            "from wheelfactory.pipeline.factory import default_recipes_dir; "
                            "print(default_recipes_dir())"],
                           cwd=installed, capture_output=True, text=True)
    assert where.stdout.strip() == str(installed.parent / "lib" / f"python{sys.version_info.major}."
                                       f"{sys.version_info.minor}" / "site-packages" / "wheelfactory_recipes")


def test_list_and_plan_from_any_directory(installed, tmp_path):
    listed = wf(installed, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("nccl", "torch", "vllm", "0.15.0-t4", "0.33.0-t5", "pytorch-2.10.0-cu131"):
        assert f"  {name}" in listed.stdout, listed.stdout
    plan = wf(installed, tmp_path, "plan", "--release", "0.15.0-t4", "--json")
    assert plan.returncode == 0, plan.stderr
    steps = [s["component"] for s in json.loads(plan.stdout)["steps"]]
    assert steps[0] == "nccl" and steps[-1] == "vllm" and "flashinfer" in steps


def test_recipes_dir_adds_releases_and_overrides_recipes_and_images_are_written(installed, tmp_path):
    mine = tmp_path / "mine"
    (mine / "releases").mkdir(parents=True)
    (mine / "releases" / "tiny.toml").write_text(TINY_RELEASE)
    (mine / "nccl.py").write_text(MY_NCCL)
    listed = wf(installed, tmp_path, "--recipes-dir", str(mine), "list")
    assert listed.returncode == 0, listed.stderr
    assert "  tiny" in listed.stdout and "  0.15.0-t4" in listed.stdout  # added, not replaced
    assert "  nccl         my-nccl" in listed.stdout and "  vllm " in listed.stdout
    # A lock of the user's release: one small real wheel, as `wheelfactory lock` would leave it.
    wheelhouse = tmp_path / "wheelhouse"
    (wheelhouse / "locks").mkdir(parents=True)
    filename = "transformers-4.57.6-py3-none-any.whl"
    with zipfile.ZipFile(wheelhouse / filename, "w") as z:
        z.writestr("transformers/__init__.py", "")
    (wheelhouse / "locks" / "tiny.json").write_text(json.dumps({
        "format": 1, "release": "tiny", "python": "3.11", "platform": "linux_x86_64", "top_level": ["transformers"],
        "packages": [{"name": "transformers", "version": "4.57.6", "filename": filename, "sha256": "0" * 64,
                      "component": None, "origin": "pypi"}]}))
    out = tmp_path / "out"
    images = wf(installed, tmp_path, "--wheelhouse", str(wheelhouse), "images", "-r", "tiny", "--no-build",
                "--output-dir", str(out), env={"WHEELFACTORY_RECIPES_DIR": str(mine)})
    assert images.returncode == 0, images.stderr
    dockerfile = (out / "tiny" / "runtime.Dockerfile").read_text()
    assert "FROM local/debian-py:bookworm" in dockerfile and (out / "tiny" / "docker-bake.hcl").is_file()
    unknown = wf(installed, tmp_path, "--recipes-dir", str(mine), "plan", "--release", "tinny")
    assert unknown.returncode == 2 and "did you mean 'tiny'" in unknown.stderr, unknown.stderr


@needs_nvcc
def test_the_ci_release_builds_from_its_path_in_another_directory(installed, tmp_path):
    built = wf(installed, tmp_path, "--cache-dir", str(tmp_path / "cache"), "build",
               "--release", str(CI_RELEASES / "ci.toml"), "nccl")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = (tmp_path / "wheelhouse").glob("nvidia_nccl_cu13-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        [prov] = [n for n in zf.namelist() if n.endswith(".dist-info/wheelfactory.json")]
        assert json.loads(zf.read(prov))["component"] == "nccl"
