"""A wheel's ELF files must be built for the machine its platform tag names (tests/data/elf/make.sh
makes the two one-function stand-ins: tiny-x86_64.so and tiny-aarch64.so)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.cuda.elfmachine import check_wheel_machine, header_machine, tag_machine
from wheelfactory.store.wheelhouse import Wheelhouse
from wheelfactory.store.wheelpack import pack_tree

from .conftest import CI_RELEASES, invoke

ELF = Path(__file__).parent / "data" / "elf"
X86_SO, ARM_SO = ELF / "tiny-x86_64.so", ELF / "tiny-aarch64.so"


def wheel_with(tmp_path: Path, objects: dict[str, Path], tag: str, dist: str = "demo", version: str = "1.0") -> Path:
    """A wheel of package `dist` holding `objects` (member path under the package -> ELF file)."""
    tree = tmp_path / f"tree-{tag}"
    (tree / dist).mkdir(parents=True)
    (tree / dist / "__init__.py").write_text("")
    for member, source in objects.items():
        (tree / dist / member).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tree / dist / member)
    return pack_tree(tree, dist, version, tag, tmp_path / "dist", summary="ELF machine test")


def test_the_stand_ins_headers_name_their_machines():
    assert header_machine(X86_SO.read_bytes()[:64]) == "EM_X86_64"
    assert header_machine(ARM_SO.read_bytes()[:64]) == "EM_AARCH64"
    assert header_machine(b"#!/bin/sh\necho not an ELF file\n") is None
    assert header_machine(b"\x7fELF\x09\x09") is None  # class and data bytes out of range


@pytest.mark.parametrize("tag, machine", [
    ("linux_aarch64", "aarch64"), ("manylinux_2_28_aarch64", "aarch64"), ("manylinux2014_x86_64", "x86_64"),
    ("linux_x86_64", "x86_64"), ("musllinux_1_2_aarch64", "aarch64"), ("any", None), ("win_amd64", None),
])
def test_platform_tags_name_a_machine(tag, machine):
    assert tag_machine(tag) == machine


@pytest.mark.parametrize("tag, obj", [
    ("cp311-cp311-linux_aarch64", ARM_SO), ("py3-none-manylinux_2_28_aarch64", ARM_SO),
    ("cp311-cp311-linux_x86_64", X86_SO), ("py3-none-any", X86_SO),  # untagged for a machine: not judged
])
def test_matching_wheels_pass(tmp_path, tag, obj):
    wheel = wheel_with(tmp_path, {"_C.so": obj}, tag)
    check_wheel_machine(wheel, [tag.rsplit("-", 1)[-1]])


def test_an_x86_64_object_in_an_aarch64_wheel_is_named(tmp_path):
    wheel = wheel_with(tmp_path, {"lib/good.so": ARM_SO, "lib/libbad.so.2": X86_SO, "bin/tool": X86_SO},
                       "cp311-cp311-linux_aarch64")
    with pytest.raises(BuildError) as e:
        check_wheel_machine(wheel, ["linux_aarch64"])
    assert str(e.value) == (f"{wheel.name}: demo/bin/tool is an x86-64 ELF file but the wheel is tagged for AArch64 "
                            "(and 1 more ELF file(s)); it was built for the wrong machine (build it on or for the "
                            "tagged machine)")


def test_the_wheelhouse_refuses_a_wrong_machine_wheel_and_publishes_nothing(tmp_path):
    wheel = wheel_with(tmp_path, {"_C.so": ARM_SO}, "cp311-cp311-manylinux_2_28_x86_64")
    wh = Wheelhouse(tmp_path / "wh")
    with wh.lock(), pytest.raises(BuildError, match=r"demo/_C.so is an AArch64 ELF file but the wheel is tagged "
                                                    r"for x86-64"):
        wh.publish([wheel], {"component": "demo", "key": "k", "origin": "built"})
    assert not wh.manifest_path.exists() and not list(wh.root.glob("*.whl"))


def test_adopting_a_wheel_of_the_wrong_machine_exits_1_naming_the_file(tmp_path):
    # Tagged for the CI release's linux_x86_64 (the adopt checks pass) but carrying an AArch64 object.
    wheel = wheel_with(tmp_path, {"lib/libtorch.so": ARM_SO}, "cp311-cp311-linux_x86_64", "torch", "2.13.0")
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "adopt", "torch",
               str(wheel), "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 1, r.stderr
    assert f"{wheel.name}: torch/lib/libtorch.so is an AArch64 ELF file but the wheel is tagged for x86-64" in r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "wh").glob("*.whl"))
