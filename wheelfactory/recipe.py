"""The recipe declaration: one frozen `RECIPE` per component module, plus optional hooks.

A recipe module under `recipes/` defines:
  RECIPE                    a `Recipe` (pure data)
  environment(spec) -> dict optional; build environment for a target, values may use ${site}, ${src},
                            ${work}, ${cuda_home}, ${cache} and ${source_<name>} placeholders filled
                            in at build time (so the build key never sees an absolute path)
  requirements(spec) -> [str] optional; build requirements that depend on the release (CUDA wheels)
  extra_sources(spec) -> {name: Source}
                            optional; further sources the build needs (vLLM's CMake dependencies,
                            Triton's LLVM), fetched by `fetch` so that `build --offline` works
  prepare(ctx)              optional; edits the unpacked source before building
  build(ctx) -> [Path]      optional; default is `pip wheel --no-build-isolation` of the source
Recipe modules import nothing heavy and run nothing at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .cuda_arch import CudaArch, parse_arch_list
from .errors import InputError
from .sources import Source


@dataclass(frozen=True)
class Repair:
    """What happens to a built wheel before it is published.

    mode "none": publish as built (pure-Python wheels).
    mode "retag": set the platform tag for the host and keep RPATHs into sibling nvidia/*
        wheels, as PyTorch's release scripts do; never bundle CUDA or NCCL libraries.
    strip: strip debug symbols from shared objects (a release can keep them with keep_debug).
    """

    mode: str = "none"
    strip: bool = True


@dataclass(frozen=True)
class Recipe:
    """Everything the planner needs to know about a component, as data."""

    name: str
    summary: str
    source: Source | None  # None: the component is only ever adopted or pinned
    outputs: tuple[str, ...]  # distribution names the build produces
    depends_on: tuple[str, ...] = ()
    # Dependencies whose wheels are installed into the build venv (default: all of depends_on).
    build_with: tuple[str, ...] | None = None
    build_requires: tuple[str, ...] = ()  # PyPI requirements of the build venv
    optional_outputs: tuple[str, ...] = ()  # outputs only some release settings produce
    env: Mapping[str, str] = field(default_factory=dict)
    mem_per_job_gb: float = 2.0
    repair: Repair = Repair()
    smoke: tuple[str, ...] = ()  # Python statements that must run after installing the outputs
    version_pattern: str | None = None  # regex for versions that are not PEP 440 (NCCL's 2.29.2-1)

    @property
    def build_deps(self) -> tuple[str, ...]:
        return self.depends_on if self.build_with is None else self.build_with


@dataclass(frozen=True)
class Target:
    """What the wheels are built for: resolved from the release and the build host."""

    python: str  # "3.12"
    cuda: str  # "13.1.0", the release's CUDA version
    cuda_arch_list: tuple[str, ...]
    platform: str  # wheel platform tag of the build host, e.g. linux_aarch64
    # The CUDA toolkit builds use: "wheels:13.1.0:<identity>" (assembled from the pinned wheels, see
    # toolkit.py), or with --system-cuda the host nvcc's release ("13.0", "none" without one).
    toolkit: str

    @property
    def python_tag(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def archs(self) -> tuple[CudaArch, ...]:
        return parse_arch_list(list(self.cuda_arch_list))

    @property
    def cuda_tag(self) -> str:
        """'cu131' for CUDA 13.1.x."""
        major, minor = self.cuda.split(".")[:2]
        return f"cu{major}{minor}"

    @property
    def machine(self) -> str:
        """'aarch64' or 'x86_64', from the platform tag."""
        return self.platform.split("_", 1)[1] if "_" in self.platform else self.platform


@dataclass(frozen=True)
class EnvSpec:
    """The pure inputs of a recipe's environment() hook."""

    version: str
    target: Target
    component_versions: Mapping[str, str]  # every component of the release, for pins
    options: Mapping[str, Any]  # the release's per-component options (e.g. aot = true)


@dataclass(frozen=True)
class LoadedRecipe:
    """A recipe module: its declaration, its hooks and the digest of its code."""

    recipe: Recipe
    module: ModuleType
    code_sha256: str
    path: Path

    def hook(self, name: str) -> Callable[..., Any] | None:
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None


def recipe_data(recipe_file: str, name: str) -> dict[str, Any]:
    """The TOML file data/<name> next to a recipe module (per-version facts and policies live there)."""
    with open(Path(recipe_file).with_name("data") / name, "rb") as f:
        return tomllib.load(f)


def version_table(recipe_file: str, name: str, key: str, hint: str) -> dict[str, Any]:
    """The [key] table of data/<name>; an InputError naming the file, the key and what to add if absent."""
    table = recipe_data(recipe_file, name)
    if key not in table:
        raise InputError(f"recipes/data/{name} has no [\"{key}\"] (known: {', '.join(sorted(table))}); {hint}")
    return table[key]


def load_recipe_module(path: Path) -> LoadedRecipe:
    """Import one recipe module from a file and check its declaration."""
    code = path.read_bytes()
    spec = importlib.util.spec_from_file_location(f"wheelfactory_recipes.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot be imported as a recipe module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise InputError(f"{path}: a recipe module must define RECIPE = Recipe(...)")
    if recipe.name != path.stem:
        raise InputError(f"{path}: RECIPE.name is {recipe.name!r}; it must match the file name {path.stem!r}")
    return LoadedRecipe(recipe, module, hashlib.sha256(code).hexdigest(), path)


def load_recipes(recipes_dir: Path) -> dict[str, LoadedRecipe]:
    """Every recipe module in a directory, by component name."""
    if not recipes_dir.is_dir():
        raise InputError(f"recipes directory {str(recipes_dir)!r} does not exist (set --recipes-dir)")
    found = {p.stem: load_recipe_module(p) for p in sorted(recipes_dir.glob("*.py")) if not p.stem.startswith("_")}
    for loaded in found.values():
        for dep in loaded.recipe.depends_on:
            if dep not in found:
                raise InputError(f"{loaded.path}: depends_on names unknown component {dep!r}")
    check_acyclic({n: lr.recipe.depends_on for n, lr in found.items()})
    return found


def check_acyclic(graph: Mapping[str, tuple[str, ...]]) -> None:
    """Raise InputError naming the cycle if depends_on has one."""
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = trail[trail.index(node):] + [node]
            raise InputError(f"dependency cycle between recipes: {' -> '.join(cycle)}")
        state[node] = 1
        for dep in graph.get(node, ()):
            visit(dep, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])
