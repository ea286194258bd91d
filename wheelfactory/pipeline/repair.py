"""Post-processing built wheels: strip debug symbols, refuse grafted CUDA libraries, record sizes.

Never `auditwheel repair` blindly on CUDA code: it copies libcuda, cuBLAS or NCCL into the
wheel. The factory instead keeps RPATHs into the sibling nvidia/* wheels (as PyTorch's release
scripts do) and only checks that no such library was bundled.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import parse_wheel_filename

from ..core.errors import BuildError
from ..planning.recipe import Repair
from ..run.runner import Runner
from ..store.wheelpack import repack, unpack

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class RepairReport:
    wheel: Path  # the repaired wheel (its name changes when it is retagged)
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
                 work: Path, strip: str = "strip") -> RepairReport:
    """Apply a recipe's repair policy to a built wheel in place. `strip` is the binutils strip that
    reads the wheel's ELFs: the target's (aarch64-linux-gnu-strip) for a cross-built wheel."""
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
                runner.run([strip, "--strip-debug", "--", path])
                stripped += 1
                saved += before - path.stat().st_size
    if stripped:
        repack(tree, wheel.name, wheel.parent)
    shutil.rmtree(tree, ignore_errors=True)
    return RepairReport(manylinux_retag(wheel, runner), stripped, saved)


_CONSISTENT_RE = re.compile(r'consistent with the following platform tag:\s*"(?P<tag>[^"]+)"')


def manylinux_retag(wheel: Path, runner: Runner) -> Path:
    """Give a linux_* wheel the manylinux tag that `auditwheel show` finds it consistent with.

    Only the tag changes (never the contents): auditwheel has checked the symbol versions and the
    external libraries, so the claim is honest. A wheel that needs libraries outside the policy
    (CUDA, NCCL through RPATH) stays linux_<arch>.
    """
    if not any(tag.platform.startswith("linux_") for tag in parse_wheel_filename(wheel.name)[3]):
        return wheel
    out = runner.run([sys.executable, "-m", "auditwheel", "show", "--", wheel], capture=True, check=False)
    m = _CONSISTENT_RE.search(" ".join(out.split()))
    if not m or not m["tag"].startswith("manylinux"):
        runner.note(f"{wheel.name}: auditwheel finds no manylinux policy it meets; keeping the linux tag")
        return wheel
    new = runner.run([sys.executable, "-m", "wheel", "tags", "--remove", f"--platform-tag={m['tag']}", "--", wheel],
                     cwd=wheel.parent, capture=True).strip().splitlines()[-1]
    runner.note(f"retagged {wheel.name} -> {new} (auditwheel show)")
    return wheel.parent / new
