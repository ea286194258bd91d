"""Repairing built wheels: no grafted CUDA/NCCL libraries (and no repair mode that would graft
them), shared objects stripped of debug info unless the release keeps it."""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.pipeline.repair import check_no_grafted_libraries, repair_wheel
from wheelfactory.planning.recipe import Repair, load_recipes
from wheelfactory.run.runner import Runner
from wheelfactory.store.wheelpack import pack_tree


class NoCommands:
    """A runner for paths that must run nothing (no strip, no auditwheel)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def run(self, cmd, **kwargs):
        raise AssertionError(f"ran {cmd!r}")

    def note(self, message: str) -> None:
        self.notes.append(message)


def wheel_with(tmp_path: Path, files: dict[str, bytes], tag: str = "py3-none-any", name: str = "demo") -> Path:
    tree = tmp_path / f"tree-{name}"
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    out = tmp_path / "dist"
    out.mkdir(exist_ok=True)
    return pack_tree(tree, name, "1.0", tag, out, summary="test")


# -- grafted libraries -----------------------------------------------------------------------------

@pytest.mark.parametrize("library", ["libcudart.so.13", "libcublasLt.so.13.1.0.3", "libcuda.so.1",
                                     "libnccl.so.2", "libnvrtc-builtins.so.13.1"])
def test_a_wheel_carrying_a_cuda_library_is_refused(tmp_path, library):
    tree = tmp_path / "t"
    (tree / "demo" / "lib").mkdir(parents=True)
    (tree / "demo" / "lib" / library).write_bytes(b"\x7fELF-not-really")
    (tree / "demo" / "lib" / "libdemo.so").write_bytes(b"\x7fELF-ours")
    with pytest.raises(BuildError) as e:
        check_no_grafted_libraries(tree, "vllm", "demo-1.0-py3-none-any.whl")
    assert f"demo/lib/{library}" in str(e.value) and "demo-1.0-py3-none-any.whl" in str(e.value)


def test_the_owner_may_carry_its_own_library_and_others_their_own(tmp_path):
    tree = tmp_path / "t"
    (tree / "nvidia" / "nccl" / "lib").mkdir(parents=True)
    (tree / "nvidia" / "nccl" / "lib" / "libnccl.so.2").write_bytes(b"\x7fELF")
    check_no_grafted_libraries(tree, "nccl", "nvidia_nccl_cu13-2.29.2-py3-none-linux_aarch64.whl")
    with pytest.raises(BuildError):  # the same file in another component's wheel is a graft
        check_no_grafted_libraries(tree, "torch", "torch-2.10.0-cp312-cp312-linux_aarch64.whl")
    other = tmp_path / "o"
    (other / "torch" / "lib").mkdir(parents=True)
    for own in ("libtorch_cuda.so", "libc10.so", "libcudart_shim.so"):
        (other / "torch" / "lib" / own).write_bytes(b"\x7fELF")
    check_no_grafted_libraries(other, "torch", "torch-2.10.0-cp312-cp312-linux_aarch64.whl")


def test_repair_refuses_a_grafted_library_and_leaves_the_wheel_as_built(tmp_path):
    wheel = wheel_with(tmp_path, {"demo/__init__.py": b"", "demo/libcublas.so.13": b"\x7fELF-copy"})
    before = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with pytest.raises(BuildError, match="demo/libcublas.so.13"):
        repair_wheel(wheel, Repair(mode="retag"), "vllm", keep_debug=False, runner=NoCommands(), work=tmp_path / "w")
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("mode", ["repair", "graft", "auditwheel", "vendor", "Retag", ""])
def test_a_repair_mode_that_is_not_none_or_retag_is_refused(mode):
    with pytest.raises(InputError) as e:
        Repair(mode=mode)
    assert repr(mode) in str(e.value) and "graft" in str(e.value)


def test_a_recipe_asking_for_auditwheel_repair_does_not_load(tmp_path):
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "x.py").write_text(textwrap.dedent("""\
        from wheelfactory.planning.recipe import Recipe, Repair
        RECIPE = Recipe(name="x", summary="", source=None, outputs=("x",), repair=Repair(mode="repair"))
    """))
    with pytest.raises(InputError, match="Repair\\(mode='repair'\\)"):
        load_recipes(d)


def test_shipped_recipes_only_retag_or_leave_wheels_alone():
    recipes = load_recipes(Path(__file__).resolve().parent.parent / "recipes")
    assert {r.recipe.repair.mode for r in recipes.values()} <= {"none", "retag"}


# -- strip / keep_debug ------------------------------------------------------------------------------

def sections(data: bytes, tmp_path: Path) -> set[str]:
    path = tmp_path / f"so-{hashlib.sha256(data).hexdigest()[:12]}"
    path.write_bytes(data)
    with open(path, "rb") as f:
        return {s.name for s in ELFFile(f).iter_sections()}


def so_of(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("demo/_lib.so")


@pytest.fixture
def debug_wheel(tmp_path) -> tuple[Path, bytes]:
    """A py3-none-any wheel (no retag: auditwheel is not asked) holding a gcc -g shared object."""
    if shutil.which("gcc") is None or shutil.which("strip") is None:
        pytest.skip("needs gcc and strip")
    src = tmp_path / "lib.c"
    src.write_text("int demo(void) { return 42; }\n")
    lib = tmp_path / "_lib.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-o", lib, src], check=True)
    built = lib.read_bytes()
    assert ".debug_info" in sections(built, tmp_path)  # the fixture is what the tests need
    return wheel_with(tmp_path, {"demo/__init__.py": b"", "demo/_lib.so": built}), built


@pytest.mark.slow  # gcc, strip
def test_a_shared_object_is_stripped_of_debug_info_by_default(tmp_path, debug_wheel):
    wheel, built = debug_wheel
    runner = Runner("demo", tmp_path / "log")
    report = repair_wheel(wheel, Repair(mode="retag"), "demo", keep_debug=False, runner=runner, work=tmp_path / "w")
    out = so_of(report.wheel)
    names = sections(out, tmp_path)
    assert ".debug_info" not in names and not any(n.startswith(".debug_") for n in names)
    assert report.stripped_files == 1 and report.bytes_saved == len(built) - len(out) > 0
    assert ".dynsym" in names  # stripped of debug info, not of what the loader needs
    (tmp_path / "loaded.so").write_bytes(out)
    assert ctypes.CDLL(str(tmp_path / "loaded.so")).demo() == 42


@pytest.mark.slow  # gcc
@pytest.mark.parametrize("keep_debug, strip", [(True, True), (False, False)])
def test_keep_debug_or_a_policy_without_strip_keeps_the_object_as_built(tmp_path, debug_wheel, keep_debug, strip):
    wheel, built = debug_wheel
    report = repair_wheel(wheel, Repair(mode="retag", strip=strip), "demo", keep_debug=keep_debug,
                          runner=NoCommands(), work=tmp_path / "w")
    assert so_of(report.wheel) == built and report.stripped_files == 0
    assert ".debug_info" in sections(so_of(report.wheel), tmp_path)


def test_mode_none_publishes_as_built(tmp_path):
    wheel = wheel_with(tmp_path, {"demo/__init__.py": b"x = 1\n"})
    before = wheel.read_bytes()
    report = repair_wheel(wheel, Repair(), "demo", keep_debug=False, runner=NoCommands(), work=tmp_path / "w")
    assert report.wheel == wheel and wheel.read_bytes() == before and report.stripped_files == 0
