"""Post-processing built wheels: strip debug symbols, refuse grafted CUDA libraries, record sizes.

Never `auditwheel repair` blindly on CUDA code: it copies libcuda, cuBLAS or NCCL into the
wheel. The factory instead keeps RPATHs into the sibling nvidia/* wheels (as PyTorch's release
scripts do) and only checks that no such library was bundled.
"""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError
from .recipe import Repair
from .runner import Runner
from .wheelpack import repack, unpack

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class RepairReport:
    wheel: Path
    stripped_files: int = 0
    bytes_saved: int = 0


def cuda_library_policy() -> list[dict[str, str]]:
    """The data file of CUDA libraries that wheels must not carry."""
    with open(Path(__file__).with_name("data") / "cuda_libraries.toml", "rb") as f:
        return tomllib.load(f)["library"]


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def check_no_grafted_libraries(tree: Path, component: str, wheel_name: str) -> None:
    """Raise if the unpacked wheel holds a CUDA/NCCL library it does not own."""
    policy = cuda_library_policy()
    for path in tree.rglob("*.so*"):
        for rule in policy:
            if fnmatch.fnmatch(path.name, rule["pattern"]) and rule.get("owner") != component:
                raise BuildError(f"{wheel_name} carries {path.relative_to(tree)} ({rule['why']}); the factory "
                                 "never bundles CUDA or NCCL libraries. Link against the nvidia/* wheel layout "
                                 "(RPATH $ORIGIN/../../nvidia/<lib>/lib) instead.")


def repair_wheel(wheel: Path, policy: Repair, component: str, *, keep_debug: bool, runner: Runner,
                 work: Path) -> RepairReport:
    """Apply a recipe's repair policy to a built wheel in place."""
    if policy.mode == "none":
        return RepairReport(wheel)
    tree = work / f"repair-{wheel.stem}"
    shutil.rmtree(tree, ignore_errors=True)
    unpack(wheel, tree)
    check_no_grafted_libraries(tree, component, wheel.name)
    stripped = saved = 0
    if policy.strip and not keep_debug:
        for path in sorted(tree.rglob("*.so*")):
            if path.is_file() and not path.is_symlink() and is_elf(path):
                before = path.stat().st_size
                runner.run(["strip", "--strip-debug", path])
                stripped += 1
                saved += before - path.stat().st_size
    if stripped:
        repack(tree, wheel.name, wheel.parent)
    shutil.rmtree(tree, ignore_errors=True)
    return RepairReport(wheel, stripped, saved)
