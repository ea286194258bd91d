"""Reuse outside Docker: a virtual environment installed from a release's lock, offline."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..core.errors import BuildError, InputError
from ..cuda.triton_ptxas import ptxas_env, ptxas_knobs
from ..planning.recipe import LoadedRecipe
from ..run.runner import Runner
from ..store.wheelhouse import Wheelhouse, atomic_write_text
from ..toolchain.installer import find_uv
from .closure import lock_paths, read_lock


def install_command(uv: str | None, py: Path, wheelhouse: Path, txt: Path, uv_cache: Path | None) -> list[str]:
    """The exact locked set, hash-checked, from the wheelhouse alone: with uv when there is one
    (seconds: it links files from its cache instead of unpacking each wheel), else with pip (minutes
    for a CUDA stack)."""
    if uv is None:
        return [str(py), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheelhouse),
                "--require-hashes", "--no-deps", "-r", str(txt)]
    # --no-config: a user's uv.toml (an index, a find-links) must not change what is installed.
    # No --compile-bytecode: compiling every module of the closure cost more (41-48 s on the CI
    # release) than the first imports compiling only what they use.
    cmd = [uv, "pip", "install", "--no-config", "--python", str(py), "--no-index", "--find-links", str(wheelhouse),
           "--require-hashes", "--no-deps", "-r", str(txt)]
    return cmd + (["--cache-dir", str(uv_cache)] if uv_cache is not None else [])


def create_venv(path: Path, release: str, wheelhouse: Wheelhouse, recipes: Mapping[str, LoadedRecipe],
                python: str, runner: Runner, *, use_uv: bool = True, uv_cache: Path | None = None,
                clear: bool = False) -> list[str]:
    """Create a venv at path from the release's lock with no index, verify hashes, run smoke checks.
    With clear, a virtual environment already at path (one with pyvenv.cfg, nothing else) is removed first.

    Returns the smoke checks that ran. Every package is installed with --require-hashes, so each
    factory wheel in the venv is byte-for-byte the one the lock names.
    """
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file, not a directory; pick a new path for the venv")
    lock = read_lock(wheelhouse, release)
    _, txt = lock_paths(wheelhouse, release)
    if path.exists() and any(path.iterdir()):
        if not clear:
            raise InputError(f"{path} exists and is not empty; pick a new path, remove it, or pass --clear "
                             "(a virtual environment there is replaced)")
        if not (path / "pyvenv.cfg").is_file():
            raise InputError(f"{path} is not a virtual environment (no pyvenv.cfg); --clear replaces only a venv, "
                             "so remove it yourself or pick a new path")
        # rmtree refuses a link (an OSError); emptying the directory it points to is not what was asked
        if path.is_symlink():
            real = path.resolve()
            raise InputError(f"{path} is a symbolic link (to {real}); --clear replaces only a venv directory itself, "
                             f"never through a link: pass {real}, or remove the link")
        shutil.rmtree(path)
    runner.run([python, "-m", "venv", path])
    py = path / "bin" / "python"
    try:
        uv = find_uv() if use_uv else None
        if use_uv and uv is None:
            runner.note("uv not found: installing with pip (slower)")
        with wheelhouse.reading():  # a concurrent --rebuild publishes after, never from under it
            runner.run(install_command(uv, py, wheelhouse.root, txt, uv_cache))
        check_consistency(py, lock.overrides, runner)
    except BuildError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    triton = next((p.version for p in lock.packages if p.name == "triton"), None)
    ptxas = point_triton_at_toolkit(path, triton)
    if ptxas:
        runner.note(f"{', '.join(ptxas_knobs(triton))} -> {ptxas} (set in {PTH_NAME} unless already set)")
    ran = []
    for component in sorted({p.component for p in lock.packages if p.component in recipes}):
        for statement in recipes[component].recipe.smoke:
            runner.run([py, "-c", statement])
            ran.append(statement)
    if triton is not None:
        # Triton compiles a kernel for the Spark (sm_121a) with the toolkit's ptxas: no GPU needed
        argv = [py, str(TRITON_CHECK), "--capability", "121"] + (["--expect-ptxas", str(ptxas)] if ptxas else [])
        runner.run(argv)
        ran.append(f"{TRITON_CHECK.name} --capability 121")
    return ran


PTH_NAME = "wheelfactory-triton-ptxas.pth"
TRITON_CHECK = Path(__file__).resolve().parents[2] / "assemble" / "imagefiles" / "triton_aot_check.py"


def ptxas_pth(triton: str | None, ptxas: str) -> str:
    """A .pth line that points every ptxas variable of that Triton at `ptxas`, unless the user set it.

    Python runs a .pth line that starts with `import` at every start of the venv's interpreter, so
    the venv's python finds the toolkit's ptxas without an activated shell."""
    env = ptxas_env(triton, ptxas)
    return f"import os; [os.environ.setdefault(k, v) for k, v in {env!r}.items()]\n"


def point_triton_at_toolkit(venv: Path, triton: str | None) -> Path | None:
    """Write the .pth of ptxas_pth when the venv holds the toolkit wheels' ptxas; that ptxas, or None."""
    found = sorted(venv.glob("lib/python*/site-packages/nvidia/cu*/bin/ptxas"))
    if not found:
        return None
    ptxas = found[-1]
    site = ptxas.parents[3]
    atomic_write_text(site / PTH_NAME, ptxas_pth(triton, str(ptxas)))
    return ptxas


def check_consistency(python: Path, overrides: Mapping[str, str], runner: Runner) -> None:
    """`pip check`, tolerating only the conflicts a release overrides on purpose."""
    out = runner.run([python, "-m", "pip", "check"], capture=True, check=False)
    problems = []
    for line in out.splitlines():
        if not line.strip() or line.startswith("No broken requirements"):
            continue
        if _names_in(line) & {canonicalize_name(name) for name in overrides}:
            runner.note(f"accepted by the release's [overrides]: {line}")
        else:
            problems.append(line)
    if problems:
        raise BuildError("pip check found broken requirements in the venv:\n  " + "\n  ".join(problems))


# pip check's lines: "A 1.0 has requirement B<2,>=1, but you have B 2.0." and "A 1.0 requires B, which
# is not installed."
_HAS_REQUIREMENT = re.compile(r"^(?P<dist>\S+) \S+ has requirement (?P<req>.+?), but you have (?P<have>\S+) ")
_REQUIRES = re.compile(r"^(?P<dist>\S+) \S+ requires ")


def _names_in(line: str) -> set[str]:
    """The packages a pip check line is about (normalized): the one that declares the requirement and,
    for a version conflict, the one required. Matched whole, so torch is not torchaudio."""
    if m := _HAS_REQUIREMENT.match(line):
        try:
            required = {canonicalize_name(Requirement(m["req"]).name)}
        except InvalidRequirement:
            required = set()
        return {canonicalize_name(m["dist"]), canonicalize_name(m["have"])} | required
    if m := _REQUIRES.match(line):
        return {canonicalize_name(m["dist"])}
    return set()
