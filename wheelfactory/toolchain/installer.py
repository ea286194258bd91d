"""Filling a build venv: the dependency components' own wheels and the build requirements.

The Executor is handed an Installer, so tests can give it one that records instead of running
and users can choose pip over uv. Both install from local files only — the wheelhouse and the
step's own pinned build requirements (filled by `download`, the one place that talks to an
index; pydeps.py) — so a build never picks up a PyPI copy of a component the factory builds, nor
a file another index served.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..core.errors import BuildError, InputError
from ..core.interrupt import file_lock
from ..run.runner import Runner
from ..store.wheelmeta import read_wheel, sha256_file

# Always in a build venv: the PEP 517 front end and the usual backends' basics.
BASE_BUILD_REQUIRES = ("build", "wheel", "setuptools")


def find_uv() -> str | None:
    """uv's binary as the uv package (a dependency) installed it beside this Python, or None.

    Never a `uv` from PATH: in a tool install (pipx, `uv tool install`) only `wheelfactory` is on
    PATH, and a uv found there would be some other version than the one the factory depends on."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None


def require_uv() -> str:
    """uv's binary for the commands that need uv itself (`lock`'s resolution), or InputError."""
    uv = find_uv()
    if uv is None:
        raise InputError("the uv package's binary is not installed beside this wheelfactory (a dependency); "
                         "reinstall wheelfactory (pip install ., pipx install ., uv tool install .)")
    return uv


class Installer(Protocol):
    """How requirements get into a build venv."""

    name: str

    def create_venv(self, runner: Runner, python: str, venv: Path, *, offline: bool, index_url: str) -> None:
        """Make the build venv `venv` with the interpreter `python`; online, with pip in it (the build
        requirements are downloaded by the venv's own pip, for its interpreter)."""

    def install(self, runner: Runner, python: Path, requirements: Sequence[str], find_links: Sequence[Path],
                env: Mapping[str, str]) -> None:
        """Install `requirements` into the venv of `python` from the `find_links` directories only."""


class PipInstaller:
    """pip: unpacks and copies every wheel into every venv (minutes for torch with its CUDA wheels)."""

    name = "pip"

    def create_venv(self, runner: Runner, python: str, venv: Path, *, offline: bool, index_url: str) -> None:
        runner.run([python, "-m", "venv", venv])  # pip from ensurepip's bundled wheel, offline too

    def install(self, runner: Runner, python: Path, requirements: Sequence[str], find_links: Sequence[Path],
                env: Mapping[str, str]) -> None:
        links = [a for d in find_links for a in ("--find-links", str(d))]
        runner.run([python, "-m", "pip", "install", "-q", "--no-index", *links, "--", *requirements], env=env)


class UvInstaller:
    """uv: unpacks a wheel once into its cache and hard-links the files into each venv, so the
    same torch in five build venvs costs seconds after the first. Same files, same resolution
    rules over the same local directories; --no-config keeps a user's uv.toml out."""

    name = "uv"

    def __init__(self, uv: str, cache: Path):
        self.uv = uv
        self.cache = cache  # inside the factory's cache: one file system, so hard links work

    def create_venv(self, runner: Runner, python: str, venv: Path, *, offline: bool, index_url: str) -> None:
        """`uv venv`: no interpreter run beyond uv's query of it, where `python -m venv` runs ensurepip
        (57.3 s against 5.6 s for `uv venv --seed` under qemu on a loaded 2-core host, bench/README.md).
        Online, --seed puts pip (with setuptools and wheel) in from the index: the build requirements'
        download needs it. Offline nothing downloads and nothing calls pip, so nothing is seeded (the
        index cannot be reached)."""
        # Exactly this interpreter: never one uv would download, nor another on PATH it prefers.
        cmd = [self.uv, "venv", "--no-config", "--quiet", "--python", shutil.which(python) or python,
               "--python-preference", "only-system", "--no-python-downloads", "--cache-dir", self.cache]
        if not offline:
            cmd += ["--seed", "--default-index", index_url]
        runner.run([*cmd, venv], env={"UV_OFFLINE": "1"} if offline else None)

    def install(self, runner: Runner, python: Path, requirements: Sequence[str], find_links: Sequence[Path],
                env: Mapping[str, str]) -> None:
        links = [a for d in find_links for a in ("--find-links", str(d))]
        runner.run([self.uv, "pip", "install", "--no-config", "--quiet", "--python", python, "--no-index",
                    "--cache-dir", self.cache, "--link-mode", "hardlink", *links, "--", *requirements], env=env)


def uv_cache_dir(cache_dir: Path) -> Path:
    """uv's cache: <cache>/uv, or WHEELFACTORY_UV_CACHE_DIR to share one between cache directories
    (it must be on the same file system as the venvs for hard links; uv copies otherwise)."""
    return Path(os.environ.get("WHEELFACTORY_UV_CACHE_DIR") or cache_dir / "uv").expanduser()


def default_installer(cache_dir: Path, prefer: str = "uv") -> Installer:
    """uv when there is one (it is a dependency), else pip; `prefer="pip"` forces pip."""
    uv = find_uv() if prefer == "uv" else None
    return UvInstaller(uv, uv_cache_dir(cache_dir)) if uv else PipInstaller()


def download(runner: Runner, python: str, requirements: Sequence[str], pydeps: Path, *,
             wheelhouse: Path, index_url: str, local_names: Iterable[str], into: Path | None = None) -> dict[str, str]:
    """Download the build requirements' wheels and sdists from the index into a directory of their
    own (`into`, else a temporary one), keep a copy in this index's pydeps/ for later runs, and
    return the pins: each file's name -> sha256. Only the files of these requirements end up in
    `into`: a build venv is offered nothing else. One process at a time per index directory."""
    pydeps.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".download-", dir=pydeps.parent))
    try:
        with file_lock(pydeps.parent / f"{pydeps.name}.lock", on_wait=lambda holder: runner.note(
                f"waiting for {pydeps}: another download is filling it ({holder})")):
            runner.run([python, "-m", "pip", "download", "-q", "--prefer-binary", "-d", fresh, "--find-links",
                        wheelhouse, "--find-links", pydeps, "--index-url", index_url, "--", *requirements])
            # pip copies local wheels it was given into -d; the wheelhouse stays their only home.
            for name in list(local_names) + [Path(r).name for r in requirements if r.endswith(".whl")]:
                (fresh / name).unlink(missing_ok=True)
            pins = {f.name: sha256_file(f) for f in sorted(fresh.iterdir()) if f.is_file()}
            for name in pins:
                shutil.copyfile(fresh / name, pydeps / f".{name}.part")
                os.replace(pydeps / f".{name}.part", pydeps / name)
        if into is not None:
            if into.exists():
                shutil.rmtree(into)
            into.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fresh, into)
        return pins
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def build_requirements(tree: Path, declared_by_recipe: Sequence[str], provided: set[str]) -> list[str]:
    """Build requirements from PyPI: the base set and the recipe's, plus the source's pyproject
    [build-system] requires minus anything a dependency component provides (torch comes from the
    wheelhouse, never from PyPI)."""
    reqs = list(BASE_BUILD_REQUIRES) + list(declared_by_recipe)
    pyproject = tree / "pyproject.toml"
    if pyproject.exists():
        try:
            declared = tomllib.loads(pyproject.read_text()).get("build-system", {}).get("requires", [])
        except tomllib.TOMLDecodeError as e:
            raise BuildError(f"{pyproject}: not valid TOML: {e}") from None
        for text in declared:
            try:
                if canonicalize_name(Requirement(text).name) not in provided:
                    reqs.append(text)
            except InvalidRequirement:
                raise BuildError(f"{pyproject}: bad build requirement {text!r}") from None
    return reqs


def check_installed_from(site: Path, wheel: Path) -> None:
    """Prove a venv's copy of a distribution came from this exact wheelhouse file (PEP 610 record)."""
    info = read_wheel(wheel)
    dist_info = site / f"{info.dist.replace('-', '_')}-{info.version}.dist-info"
    direct = dist_info / "direct_url.json"
    if not direct.exists():
        raise BuildError(f"{info.dist} {info.version} in {site} was not installed from {wheel} "
                         "(no direct_url.json); a copy from another index replaced the factory's wheel")
    url = json.loads(direct.read_text()).get("url", "")
    if Path(unquote(urlparse(url).path)).resolve() != wheel.resolve():
        raise BuildError(f"{info.dist} in {site} came from {url}, not the wheelhouse file {wheel}")
