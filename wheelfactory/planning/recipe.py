"""The recipe declaration: one frozen `RECIPE` per component module, plus optional hooks.

A recipe module under `recipes/` defines RECIPE, a `Recipe` (pure data), and any of the hooks
of `RecipeHooks` below, each optional; without a build hook the default build runs
`python -m build --wheel --no-isolation` on the source (BuildContext.build_wheel). A module
constant `CROSS = True` says the build cross-compiles with the toolchain a cross step gets
(`build --cross`, see crossbuild.py). Recipe modules import from `wheelfactory.recipe_api` only,
import nothing heavy and run nothing at import time. docs/RECIPES.md is the guide.

The contract is closed: every public function a recipe module defines must be one of the hooks
(checked at load, so `def prepair(ctx)` is an error, not a hook that silently never runs);
helpers start with `_`. The options a release may set and the data files the recipe reads are
declared in RECIPE, so both are validated and keyed.
"""

from __future__ import annotations

import importlib.util
import inspect
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from ..core.codehash import code_digest, data_digest
from ..core.errors import InputError, did_you_mean
from ..cuda.cuda_arch import CudaArch, parse_arch_list
from ..sources.kinds import Source

if TYPE_CHECKING:
    from .context import BuildContext, FetchContext


class RecipeHooks(Protocol):
    """The hooks a recipe module may define, in the order a build calls them; each is optional and
    takes one argument. The first three are pure (they shape the plan and the build key); the
    others do the work, through their context only."""

    def environment(self, spec: EnvSpec) -> Mapping[str, str]:
        """The build's environment for a target. Values may use ${site}, ${src}, ${work},
        ${cuda_home}, ${cache} and ${source_<name>}, filled in at build time (so the key never
        sees an absolute path)."""
        ...

    def requirements(self, spec: EnvSpec) -> list[str]:
        """PyPI build requirements that depend on the release (the CUDA wheels of its CUDA)."""
        ...

    def extra_sources(self, spec: EnvSpec) -> Mapping[str, Source]:
        """Further sources the build needs (vLLM's CMake dependencies, Triton's LLVM), by name;
        fetched by `fetch`, so that `build --offline` works."""
        ...

    def fetch(self, ctx: FetchContext) -> None:
        """More fetch work once the source tree is in the cache (vLLM's Rust crates), run by
        `fetch` and by every build's fetch phase; with ctx.offline it only checks it was done."""
        ...

    def prepare(self, ctx: BuildContext) -> None:
        """Edits of the private source copy, after the release's patches, before the venv is filled."""
        ...

    def configure(self, ctx: BuildContext) -> None:
        """The build system's configure step alone (`build --until configure` stops after it)."""
        ...

    def build(self, ctx: BuildContext) -> list[Path]:
        """The wheels, built into ctx.dist; without this hook: ctx.build_wheel()."""
        ...


# The hook names, in the order a build calls them: the Protocol's methods.
HOOKS = tuple(name for name, value in vars(RecipeHooks).items() if inspect.isfunction(value) and name[0] != "_")


def hook_argument(name: str) -> str:
    """What a hook is called with, as the Protocol names it: 'spec' (an EnvSpec) or 'ctx' (a context)."""
    return list(inspect.signature(getattr(RecipeHooks, name)).parameters)[1]


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

    def __post_init__(self) -> None:
        if self.mode not in REPAIR_MODES:
            raise InputError(f"Repair(mode={self.mode!r}): unknown repair mode; expected one of "
                             f"{', '.join(REPAIR_MODES)}. The factory never grafts libraries into a wheel "
                             "(auditwheel repair would copy libcuda, cuBLAS or NCCL in): 'retag' keeps RPATHs "
                             "into the nvidia/* wheels and only sets the platform tag")


# The repair modes (see Repair). There is deliberately no mode that grafts or vendors libraries.
REPAIR_MODES = ("none", "retag")


# The value types an option may have, as TOML writes them; bool is not an int here (TOML's
# `true` must not pass for a count, nor 1 for a switch).
OPTION_TYPES = {bool: "true or false", int: "an integer", str: "a string"}


@dataclass(frozen=True)
class Option:
    """A setting a release may give under [components.<name>] options (Spack's variants): the
    recipe declares it, a release file is checked against it, and its value enters the key."""

    name: str
    type: type  # bool, int or str
    default: Any
    help: str

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES or not _is_type(self.default, self.type):
            raise InputError(f"Option({self.name!r}): type must be one of bool, int, str and the default "
                             f"{self.default!r} of that type")

    def check(self, value: Any, where: str) -> Any:
        """The value a release gives, or an InputError naming where and what was expected."""
        if not _is_type(value, self.type):
            raise InputError(f"{where}: expected {OPTION_TYPES[self.type]}, got {value!r}")
        return value


def _is_type(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


# Field metadata of a Recipe fact that is not part of the build (a host estimate): build keys leave it out.
NOT_KEYED = {"keyed": False}


@dataclass(frozen=True)
class GccNeed:
    """The oldest GCC a component's build accepts, from its own build files (checked by `doctor`
    and before a build, so that no download and venv are spent on a configure that stops)."""

    versions: str  # the component versions it holds for, a PEP 440 specifier such as ">=0.33"
    gcc: int  # the oldest GCC major
    why: str  # what in the build needs it, with the upstream reference
    clang: str = ""  # what a clang does instead (a warning), when the build's own check lets one pass
    # (option, value): only when a release sets the option to the value (vLLM compiles C++ only
    # with kernels = true); empty: always.
    when: tuple[str, Any] | tuple[()] = ()


@dataclass(frozen=True)
class HostLibrary:
    """A C library a build takes from the build host, not from a wheel (mscclpp's libnuma, say):
    its header and its library must be where the host's C++ compiler finds them. Checked by
    `doctor` and before a build, so a missing one is named before the download and the venv,
    not by a CMake error an hour in."""

    header: str  # what the build includes, e.g. "numa.h"
    library: str  # the linker's name, e.g. "numa" for -lnuma (libnuma.so)
    package: str  # the Debian/Ubuntu (DGX OS) package that installs both, e.g. "libnuma-dev"
    why: str  # what in the build needs it, with the upstream file


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
    options: tuple[Option, ...] = ()  # what a release may set under options = { ... }
    # Files under recipes/data/ the hooks read (through recipe_data/version_table only): their
    # data enters the key of every build of the recipe (a TOML file as its parsed tables, so a
    # comment costs no rebuild), and a changed value rebuilds what it shapes.
    data_files: tuple[str, ...] = ()
    # Variables of the factory's environment the build may read besides buildenv's allowlist (a
    # build system's own cache location, say). Credentials never pass; --secret-env gives those.
    pass_env: tuple[str, ...] = ()
    # Facts for checking a host, not for building: kept out of build keys (NOT_KEYED), so that
    # refining an estimate rebuilds nothing. Peak disk of one build's work tree (source copy,
    # build directory, venv, wheels) in GB, from builds of the component; rough on purpose.
    disk_gb: float = field(default=5.0, metadata=NOT_KEYED)
    # (option, value, GB): the peak instead when a release sets the option to the value (vLLM
    # without kernels compiles nothing); the first match wins.
    disk_gb_if: tuple[tuple[str, Any, float], ...] = field(default=(), metadata=NOT_KEYED)
    # The compilers the build accepts, by version (a build that compiles with an older GCC stops).
    gcc_needs: tuple[GccNeed, ...] = field(default=(), metadata=NOT_KEYED)
    # C libraries the build links from the host (headers and library on the compiler's paths).
    host_libraries: tuple[HostLibrary, ...] = field(default=(), metadata=NOT_KEYED)

    def option_defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def key_declaration(self) -> dict[str, Any]:
        """The declaration as it enters build keys: every field but the NOT_KEYED ones."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("keyed", True)}

    def disk_estimate(self, options: Mapping[str, Any]) -> float:
        """Peak GB of one build's work tree with these options (defaults filled in)."""
        values = self.option_defaults() | dict(options)
        return next((gb for name, value, gb in self.disk_gb_if if values.get(name) == value), self.disk_gb)

    def gcc_need(self, version: str, options: Mapping[str, Any]) -> GccNeed | None:
        """The strictest GCC need that holds for this version and these options, if any."""
        values = self.option_defaults() | dict(options)
        needs = [n for n in self.gcc_needs if (not n.when or values.get(n.when[0]) == n.when[1])
                 and Version(version) in SpecifierSet(n.versions)]
        return max(needs, key=lambda n: n.gcc, default=None)

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
    """A recipe module: its declaration, its hooks and the digests of its code and data files."""

    recipe: Recipe
    module: ModuleType
    # Of its canonical code (codehash.py), RECIPE left out (keyed as its declaration): docstrings,
    # comments, annotations and the path do not count.
    code_digest: str
    path: Path
    data_sha256: Mapping[str, str] = field(default_factory=dict)  # declared data file -> sha256

    def hook(self, name: str) -> Callable[..., Any] | None:
        if name not in HOOKS:
            raise ValueError(f"{name!r} is not a recipe hook (hooks: {', '.join(HOOKS)})")
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None

    @property
    def cross(self) -> bool:
        """Whether the module declares `CROSS = True`: its build cross-compiles with the toolchain a
        cross step gets (crossbuild.py). A module constant, not a Recipe field: the declaration enters
        every key, and the module's code (this line with it) already enters the recipe's."""
        return getattr(self.module, "CROSS", False) is True


def _data_path(recipe: Recipe, recipe_file: str | Path, name: str) -> Path:
    if name not in recipe.data_files:
        # Undeclared data would shape the build without entering its key.
        declared = ", ".join(recipe.data_files) or "none"
        raise InputError(f"{recipe_file}: reads recipes/data/{name}, which RECIPE does not declare "
                         f"(data_files: {declared}){did_you_mean(name, recipe.data_files)}; add it to "
                         "Recipe(data_files=...) so that it enters the build key")
    return Path(recipe_file).with_name("data") / name


def recipe_data(recipe: Recipe, recipe_file: str | Path, name: str) -> dict[str, Any]:
    """The declared TOML file data/<name> next to a recipe module (per-version facts and policies
    live there); called from a recipe as recipe_data(RECIPE, __file__, "vllm.toml")."""
    path = _data_path(recipe, recipe_file, name)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"recipes/data/{name}: not valid TOML: {e}") from None


def version_table(recipe: Recipe, recipe_file: str | Path, name: str, key: str, hint: str) -> dict[str, Any]:
    """The [key] table of data/<name>; an InputError naming the file, the key and what to add if absent."""
    table = recipe_data(recipe, recipe_file, name)
    if key not in table:
        raise InputError(f"recipes/data/{name} has no [\"{key}\"] (known: {', '.join(sorted(table))}); {hint}")
    return table[key]


def check_hooks(module: ModuleType, path: Path) -> None:
    """The closed contract: each public function or class the module itself defines is a hook
    taking one argument. Imported names (Path, Recipe, ...) are not the module's own."""
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
            continue
        try:
            params = list(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            params = ["..."]
        shown = f"def {name}({', '.join(params)})"
        if name not in HOOKS:
            close = did_you_mean(name, HOOKS)
            if close:
                raise InputError(f"{path}: {shown} is not a recipe hook{close}")
            raise InputError(f"{path}: {shown} is not a recipe hook (hooks: {', '.join(HOOKS)}); "
                             f"name a helper with a leading underscore, e.g. _{name}")
        if not inspect.isfunction(obj) or len(params) != 1:
            raise InputError(f"{path}: {shown}: the {name} hook takes exactly one argument "
                             f"({hook_argument(name)})")


def load_recipe_module(path: Path) -> LoadedRecipe:
    """Import one recipe module from a file and check its declaration, hooks and data files."""
    code = path.read_bytes()
    spec = importlib.util.spec_from_file_location(f"wheelfactory_recipes.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot be imported as a recipe module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise InputError(f"{path}:{e.lineno}: not valid Python ({e.msg}); fix the recipe module") from None
    except Exception as e:  # noqa: BLE001 -- any exception a module raises while imported is bad input
        raise InputError(f"{path}: the recipe module raised {type(e).__name__} on import ({e}); fix it") from None
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise InputError(f"{path}: a recipe module must define RECIPE = Recipe(...)")
    if recipe.name != path.stem:
        raise InputError(f"{path}: RECIPE.name is {recipe.name!r}; it must match the file name {path.stem!r}")
    check_hooks(module, path)
    names = [o.name for o in recipe.options]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: RECIPE.options declares an option twice: {', '.join(names)}")
    for need in recipe.gcc_needs:
        try:
            SpecifierSet(need.versions)
        except InvalidSpecifier:
            raise InputError(f"{path}: RECIPE.gcc_needs: {need.versions!r} is not a version specifier such as "
                             "'>=0.33'") from None
    for option in [o for o, _, _ in recipe.disk_gb_if] + [n.when[0] for n in recipe.gcc_needs if n.when]:
        if option not in names:
            raise InputError(f"{path}: RECIPE names option {option!r} in a host estimate, which RECIPE.options does "
                             f"not declare{did_you_mean(option, names)}")
    data = {}
    for name in recipe.data_files:
        data_file = path.with_name("data") / name
        if not data_file.is_file():
            raise InputError(f"{path}: RECIPE.data_files names {name!r}, and {data_file} does not exist")
        data[name] = data_digest(data_file)
    return LoadedRecipe(recipe, module, code_digest(code, str(path), data_names=("RECIPE",)), path, data)


def load_recipes(*recipes_dirs: Path) -> dict[str, LoadedRecipe]:
    """Every recipe module in the directories, by component name. A name in an earlier directory
    hides the same name in a later one: the user's --recipes-dir over the shipped recipes."""
    files: dict[str, Path] = {}
    for recipes_dir in recipes_dirs:
        if recipes_dir.exists() and not recipes_dir.is_dir():
            raise InputError(f"recipes directory {str(recipes_dir)!r} is a file, not a directory (set --recipes-dir "
                             "to a directory of recipe modules)")
        if not recipes_dir.is_dir():
            raise InputError(f"recipes directory {str(recipes_dir)!r} does not exist (set --recipes-dir)")
        for p in sorted(recipes_dir.glob("*.py")):
            if not p.stem.startswith("_"):
                files.setdefault(p.stem, p)
    found = {name: load_recipe_module(path) for name, path in sorted(files.items())}
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
