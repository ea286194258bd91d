"""Adopt validates: the spec when the release is loaded, the wheel before anything is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.planning.adopt import check_adopt_spec, check_adopted_wheel
from wheelfactory.planning.recipe import Recipe, Target
from wheelfactory.store.wheelpack import pack_tree

from .conftest import CI_RELEASES, invoke

TORCH = Recipe(name="torch", summary="", source=None, outputs=("torch",))
NCCL = Recipe(name="nccl", summary="", source=None, outputs=("nvidia-nccl-cu13",), version_pattern=r"\d+\.\d+\.\d+-\d+")
X86 = Target("3.11", "13.0", ("12.1a",), "linux_x86_64", "none")
ARM = Target("3.12", "13.1.0", ("12.1a",), "linux_aarch64", "none")


def check(filename: str, version: str = "2.13.0", target: Target = X86, recipe: Recipe = TORCH) -> None:
    check_adopted_wheel(Path("/nowhere") / filename, recipe.name, version, recipe, target)


@pytest.mark.parametrize("filename, version, target", [
    ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "2.13.0", X86),  # the CI release's wheel
    ("torch-2.13.0-cp311-cp311-linux_x86_64.whl", "2.13.0", X86),
    ("torch-2.13.0-py3-none-any.whl", "2.13.0", X86),
    ("torch-2.13.0-cp39-abi3-manylinux2014_x86_64.whl", "2.13.0", X86),  # abi3 from an older CPython
    ("torch-2.10.0+cu130-cp312-cp312-manylinux_2_28_aarch64.whl", "2.10.0+cu130", ARM),
    ("torch-2.10.0-cp312-cp312-linux_aarch64.whl", "2.10.0", ARM),
])
def test_fitting_wheels_are_accepted(filename, version, target):
    check(filename, version, target)


def test_nccl_tag_form_compares_without_the_package_revision():
    check("nvidia_nccl_cu13-2.29.2-py3-none-manylinux_2_18_aarch64.whl", "2.29.2-1", ARM, NCCL)


CHANGE = "adopt the wheel of that version or change the release's version"


@pytest.mark.parametrize("filename, version, target, why", [
    ("torchvision-2.13.0-py3-none-any.whl", "2.13.0", X86,
     "is a wheel of 'torchvision'; torch adopts one of: torch"),
    ("torch-2.15.0-py3-none-any.whl", "2.13.0", X86,
     "version 2.15.0, and the release's torch is 2.13.0 (a local label such as +cu130 may follow); " + CHANGE),
    ("torch-2.10.0+cpu-cp312-cp312-linux_aarch64.whl", "2.10.0+cu130", ARM,
     "version 2.10.0+cpu, and the release's torch is 2.10.0+cu130 exactly; " + CHANGE),
    ("torch-2.13.0-cp39-cp39-manylinux_2_28_x86_64.whl", "2.13.0", X86,
     "tags cp39-cp39-manylinux_2_28_x86_64 do not install on the target (Python 3.11, linux_x86_64)"),
    ("torch-2.13.0-cp311-cp311-win_amd64.whl", "2.13.0", X86,
     "tags cp311-cp311-win_amd64 do not install on the target (Python 3.11, linux_x86_64)"),
    ("torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl", "2.13.0", X86,
     "tags cp311-cp311-manylinux_2_28_aarch64 do not install on the target (Python 3.11, linux_x86_64)"),
    ("torch-2.13.0-cp312-abi3-linux_x86_64.whl", "2.13.0", X86,  # abi3 built for a newer CPython
     "tags cp312-abi3-linux_x86_64 do not install on the target (Python 3.11, linux_x86_64)"),
])
def test_wrong_wheels_are_refused(filename, version, target, why):
    with pytest.raises(InputError) as e:
        check(filename, version, target)
    assert str(e.value) == f"[torch] adopted wheel {filename}: {why}; nothing was published"


@pytest.mark.parametrize("spec, why", [
    ("torch>>>=!!2", "'torch>>>=!!2' is neither a wheel path, a URL nor a requirement such as 'torch==<version>'"),
    ("torchvision==2.13.0", "requirement 'torchvision==2.13.0' names 'torchvision'; torch adopts one of: torch"),
    ("torch==2.15.0", "requirement 'torch==2.15.0' excludes the release's version 2.13.0"),
    ("/w/torch.whl", "'/w/torch.whl' is not a wheel file name"),
    ("https://example.org/x/vllm-1.0-py3-none-any.whl",
     "vllm-1.0-py3-none-any.whl is a wheel of 'vllm'; torch adopts one of: torch"),
])
def test_bad_adopt_specs_are_refused(spec, why):
    with pytest.raises(InputError) as e:
        check_adopt_spec(spec, TORCH, "r.toml [components.torch].adopt", "2.13.0")
    assert str(e.value).startswith(f"r.toml [components.torch].adopt: {why}")


@pytest.mark.parametrize("spec", ["torch", "torch>=2.13,<2.14", "torch==2.13.0",
                                  "https://example.org/x/torch-2.13.0-py3-none-any.whl"])
def test_good_adopt_specs_pass(spec):
    check_adopt_spec(spec, TORCH, "here", "2.13.0")


def test_unparseable_requirement_exits_2_and_publishes_nothing(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "adopt", "torch",
                "torch>>>=!!2", "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 2, r.stderr
    assert "--adopt torch=torch>>>=!!2: 'torch>>>=!!2' is neither a wheel path" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "wh" / "manifest.json").exists()


@pytest.mark.parametrize("version, tag, why", [
    ("2.13.0", "cp311-cp311-win_amd64", "do not install on the target"),
    ("2.15.0", "py3-none-any", "version 2.15.0, and the release's torch is 2.13.0"),
])
def test_adopting_a_wrong_wheel_exits_2_and_publishes_nothing(tmp_path, version, tag, why):
    tree = tmp_path / "tree"
    (tree / "torch").mkdir(parents=True)
    (tree / "torch" / "__init__.py").write_text("")
    wheel = pack_tree(tree, "torch", version, tag, tmp_path / "dist", summary="a wrong torch")
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "adopt", "torch",
                str(wheel), "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 2, r.stderr
    assert f"[torch] adopted wheel {wheel.name}: " in r.stderr and why in r.stderr
    assert "nothing was published" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "wh" / "manifest.json").exists()
    assert not list((tmp_path / "wh").glob("*.whl"))
