"""Release files: one TOML file per image release, validated before any work starts.

A release names the target and, for each component, its version and optional overrides:

    extends = "0.15.0-t4"            # optional: start from another release
    [target]   python, cuda, cuda_arch_list, platform
    [image]    kind, repository, base, tag (optional; derived from versions)
    [components.<name>]  version, source = {git,ref | url,sha256 | pypi | path}, env, adopt, options
    [pins]     pure-Python packages taken from PyPI at exact versions (transformers, ray, ...)
    [overrides] pins or components whose version wins over what other packages declare, each
               with the reason (the version is the pin's or the component's):
               transformers = "vLLM 0.15 declares transformers<5; the -t5 images run 5.x"
               torch = "vLLM 0.33.0 pins torch==2.14.0; this release adopts the official 2.14.1"
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from ..core.errors import InputError, did_you_mean
from ..core.grammar import (
    MAX_EXTENDS_DEPTH,
    check_distribution_name,
    check_env_key,
    check_env_value,
    check_oci_repository,
    check_oci_tag,
    check_path_length,
    check_text,
    check_tree,
    check_version_text,
)
from ..cuda.cuda_arch import parse_arch, parse_arch_list
from ..sources.kinds import Source, is_local_wheel, source_from_table
from .adopt import check_adopt_spec
from .recipe import LoadedRecipe, Recipe

TOP_KEYS = {"extends", "description", "target", "image", "components", "pins", "overrides"}
TARGET_KEYS = {"python", "cuda", "cuda_arch_list", "platform"}
OPTIONAL_TARGET_KEYS = {"system_cuda"}  # true: build with the host's CUDA toolkit, not the release's from wheels
IMAGE_KEYS = {"kind", "repository", "base", "tag", "dev_base"}
IMAGE_KINDS = {"vllm", "pytorch"}
COMPONENT_KEYS = {"version", "source", "env", "adopt", "keep_debug", "options", "extra_sources"}
# Where a release's strings are prose (tabs and newlines allowed); every other string of a
# release file is refused if it holds a control character (grammar.check_tree).
PROSE = frozenset({("description",), ("overrides", "*"), ("components", "*", "env", "*")})
TARGETS_FILE = Path(__file__).with_name("data") / "targets.toml"


@dataclass(frozen=True)
class ComponentSpec:
    """One component as a release asks for it."""

    name: str
    version: str
    source: Source | None = None  # overrides the recipe's default source
    env: Mapping[str, str] = field(default_factory=dict)
    adopt: str | None = None  # a wheel path/URL or a requirement to take instead of building
    keep_debug: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    # Replacements for the recipe's extra sources by name (vLLM's CMake dependencies brought in
    # beforehand: a local tree, a fork, a mirror).
    extra_sources: Mapping[str, Source] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetSpec:
    python: str
    cuda: str
    cuda_arch_list: tuple[str, ...]
    platform: str  # what the release is meant for; builds run for the host they run on
    system_cuda: bool = False  # build with the host's toolkit instead of the release's CUDA from wheels


@dataclass(frozen=True)
class Release:
    """A validated release."""

    name: str
    path: Path
    description: str
    target: TargetSpec
    image: Mapping[str, str]
    components: Mapping[str, ComponentSpec]
    pins: Mapping[str, str]  # name -> exact version
    overrides: Mapping[str, str] = field(default_factory=dict)  # pin or component name -> why it overrides

    def version_of(self, name: str) -> str | None:
        """The version of a component or pin, or None."""
        if name in self.components:
            return self.components[name].version
        return self.pins.get(name)

    def override_table(self) -> dict[str, dict[str, str]]:
        """Each override with what it overrides to: name -> {kind (pin | component), version, reason}."""
        return {name: {"kind": "component" if name in self.components else "pin",
                       "version": self.version_of(name) or "", "reason": why}
                for name, why in sorted(self.overrides.items())}


def releases_dir(recipes_dir: Path) -> Path:
    return recipes_dir / "releases"


def _layers(recipes_dir: Path | Sequence[Path]) -> list[Path]:
    """One recipes directory, or several in lookup order (the user's before the shipped)."""
    return [recipes_dir] if isinstance(recipes_dir, Path) else list(recipes_dir)


def list_releases(recipes_dir: Path | Sequence[Path]) -> list[str]:
    """Names of the releases in the recipes directories' releases/."""
    return sorted({p.stem for d in _layers(recipes_dir) for p in releases_dir(d).glob("*.toml")})


def resolve_release_path(name_or_path: str, recipes_dir: Path | Sequence[Path], near: Path | None = None) -> Path:
    """A release name (looked up next to `near`, then in each recipes directory's releases/, the
    first one that has it winning) or a path to a TOML file."""
    check_text(name_or_path, "release name or path")
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        p = Path(name_or_path).expanduser()
        if near is not None and not p.is_absolute():
            p = near / p
        if not check_path_length(p, "release file").is_file():
            raise InputError(f"release file {str(p)!r} does not exist")
        return p
    for d in ([near] if near else []) + [releases_dir(r) for r in _layers(recipes_dir)]:
        p = d / f"{name_or_path}.toml"
        if check_path_length(p, "release").is_file():
            return p
    raise InputError(f"unknown release {name_or_path!r}"
                     f"{did_you_mean(name_or_path, list_releases(recipes_dir))}; "
                     "`wheelfactory list` shows the releases, or pass a path to a TOML file")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8; tomllib raises this one, not TOMLDecodeError
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise InputError(f"{path}: arrays or tables nested thousands deep; a release file is a few tables "
                         "deep") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge tables; a `source` table replaces the inherited one whole."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "source":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _raw_release(path: Path, recipes_dir: Path | Sequence[Path], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The release's table with its `extends` chain merged in (each file's keys checked)."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in seen + (path.resolve(),))
        raise InputError(f"{path}: 'extends' forms a cycle: {chain}")
    if len(seen) >= MAX_EXTENDS_DEPTH:
        raise InputError(f"{seen[0]}: the 'extends' chain is more than {MAX_EXTENDS_DEPTH} releases long (it reaches "
                         f"{path}); extend a release nearer the root")
    data = _read_toml(path)
    check_tree(data, str(path), PROSE)
    _check_keys(data, TOP_KEYS, str(path), "top-level key")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise InputError(f"{path}: 'extends' must be a release name or path, got {parent!r}")
    try:
        parent_path = resolve_release_path(parent, recipes_dir, near=path.parent)
    except InputError as e:
        raise InputError(f"{path}: extends: {e}") from None  # name the file whose extends is wrong
    return _merge(_raw_release(parent_path, recipes_dir, seen + (path.resolve(),)), data)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    for key in table:
        if key not in allowed:
            raise InputError(f"{where}: unknown {what} {key!r}{did_you_mean(key, allowed)}; "
                             f"expected one of: {', '.join(sorted(allowed))}")


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise InputError(f"{where}: [{key}] must be a table, got {value!r}")
    return value


def _check_adopt(spec: str, where: str, *, recipe: Recipe, version: str) -> str:
    return check_adopt_spec(spec, recipe, where, version)


def _adopt_choice(value: Any, path: Path, where: str, check: Callable[[str, str], str]) -> str:
    """A component's adopt spec: one string, or a list of alternatives of which the first local
    wheel that exists is taken, else the first requirement or URL (a CPU wheel that one kind of
    machine has on disk, PyPI's wheel of that version anywhere else). Each is checked; relative
    wheel paths are taken from the release file's directory."""
    alternatives = value if isinstance(value, list) and value else [value]
    specs = []
    for i, item in enumerate(alternatives):
        at = f"{where}[{i}]" if isinstance(value, list) else where
        spec = _string(item, at)
        if is_local_wheel(spec) and not Path(spec).expanduser().is_absolute():
            spec = str((path.parent / spec).resolve())
        specs.append(check(spec, at))  # a URL comes back normalised
    local = [s for s in specs if is_local_wheel(s)]
    return next((s for s in local if Path(s).expanduser().is_file()),
                next((s for s in specs if not is_local_wheel(s)), specs[0]))


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _options(given: Mapping[str, Any], recipe: Recipe, where: str) -> dict[str, Any]:
    """A component's options checked against the recipe's declared ones, defaults filled in (so
    the build key sees every value the build will read, given or not)."""
    declared = {o.name: o for o in recipe.options}
    for key, value in given.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InputError(f"{where} options.{key}: unknown option {key!r}{did_you_mean(key, declared)}; "
                             f"{recipe.name} options: {known} (`wheelfactory list --options`)")
        declared[key].check(value, f"{where} options.{key}")
    return recipe.option_defaults() | dict(given)


def check_version(version: str, pattern: str | None, where: str) -> None:
    """Reject a version that is neither PEP 440 nor the recipe's own pattern (ASCII, no
    whitespace, bounded length, either way)."""
    check_version_text(version, where)
    if pattern is not None:
        if not re.fullmatch(pattern, version, re.ASCII):
            raise InputError(f"{where}: bad version {version!r}: expected the form {pattern}")
        return
    try:
        Version(version)
    except InvalidVersion:
        raise InputError(f"{where}: bad version {version!r}: expected a PEP 440 version such as 2.10.0") from None


def known_targets() -> dict[str, Any]:
    """data/targets.toml: the platforms and CUDA compute capabilities a release may name."""
    with open(TARGETS_FILE, "rb") as f:
        return tomllib.load(f)


def load_release(name_or_path: str, recipes: Mapping[str, LoadedRecipe],
                 recipes_dir: Path | Sequence[Path]) -> Release:
    """Load, merge and validate a release; every error names the file and key."""
    path = resolve_release_path(name_or_path, recipes_dir)
    where = str(path)
    data = _raw_release(path, recipes_dir)

    target = _table(data, "target", where)
    _check_keys(target, TARGET_KEYS | OPTIONAL_TARGET_KEYS, f"{where} [target]", "key")
    for key in sorted(TARGET_KEYS):
        if key not in target:
            raise InputError(f"{where} [target]: missing key {key!r} (e.g. python = '3.12', cuda = '13.1.0', "
                             "cuda_arch_list = ['12.1a'], platform = 'linux_aarch64')")
    arch_list = target["cuda_arch_list"]
    if not isinstance(arch_list, list) or not all(isinstance(a, str) for a in arch_list):
        raise InputError(f"{where} [target].cuda_arch_list: expected a list of strings such as ['12.1a']")
    known = known_targets()
    try:
        archs = parse_arch_list(arch_list)
        # Kept in the parser's spelling, one arch per entry ("9.0;12.1a" -> "9.0", "12.1a"), so a
        # build key and every tool given the list see one form of it.
        arch_list = [str(a) for a in archs]
    except InputError as e:
        raise InputError(f"{where} [target].cuda_arch_list: {e}") from None
    for arch in archs:
        capability = f"{arch.major}.{arch.minor}"
        first = {"a": known["arch_specific_from"], "f": known["family_specific_from"]}.get(arch.suffix)
        if capability not in known["capabilities"] or (first and arch.device < parse_arch(first).device):
            raise InputError(f"{where} [target].cuda_arch_list: {str(arch)!r} is no CUDA architecture; known "
                             f"compute capabilities: {', '.join(known['capabilities'])} ('a' from "
                             f"{known['arch_specific_from']}, 'f' from {known['family_specific_from']}; "
                             f"{TARGETS_FILE.name})")
    python = _string(target["python"], f"{where} [target].python")
    if not re.fullmatch(r"3\.\d+", python, re.ASCII):  # ASCII: \d also takes full-width digits
        raise InputError(f"{where} [target].python: expected MAJOR.MINOR such as '3.12', got {python!r}")
    cuda = _string(target["cuda"], f"{where} [target].cuda")
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", cuda, re.ASCII):
        raise InputError(f"{where} [target].cuda: expected a version such as '13.1.0', got {cuda!r}")
    system_cuda = target.get("system_cuda", False)
    if not isinstance(system_cuda, bool):
        raise InputError(f"{where} [target].system_cuda: expected true or false, got {system_cuda!r}")
    platform = _string(target["platform"], f"{where} [target].platform")
    if platform not in known["platforms"]:
        raise InputError(f"{where} [target].platform: {platform!r} is not a platform the factory builds for"
                         f"{did_you_mean(platform, known['platforms'])}; expected one of "
                         f"{', '.join(known['platforms'])}")
    target_spec = TargetSpec(python, cuda, tuple(arch_list), platform, system_cuda)

    image = _table(data, "image", where)
    _check_keys(image, IMAGE_KEYS, f"{where} [image]", "key")
    for key, value in image.items():
        _string(value, f"{where} [image].{key}")
    if "tag" in image:  # a tag and a repository become Dockerfile text and docker arguments
        check_oci_tag(image["tag"], f"{where} [image].tag")
    if "repository" in image:
        check_oci_repository(image["repository"], f"{where} [image].repository")
    if "kind" in image and image["kind"] not in IMAGE_KINDS:
        raise InputError(f"{where} [image].kind: unknown kind {image['kind']!r}"
                         f"{did_you_mean(image['kind'], IMAGE_KINDS)}; expected one of {sorted(IMAGE_KINDS)}")

    components: dict[str, ComponentSpec] = {}
    for name, table in _table(data, "components", where).items():
        cwhere = f"{where} [components.{name}]"
        if name not in recipes:
            raise InputError(f"{where}: unknown component {name!r}{did_you_mean(name, recipes)}; "
                             f"known components: {', '.join(sorted(recipes))}")
        if not isinstance(table, dict):
            raise InputError(f"{cwhere}: expected a table with at least 'version'")
        _check_keys(table, COMPONENT_KEYS, cwhere, "key")
        version = _string(table.get("version"), f"{cwhere}.version")
        check_version(version, recipes[name].recipe.version_pattern, f"{cwhere}.version")
        source = None
        if "source" in table:
            src = table["source"]
            if not isinstance(src, dict):
                raise InputError(f"{cwhere}.source: expected a table such as {{ git = '...', ref = '...' }}")
            source = source_from_table(src, f"{cwhere}.source", path.parent)
        env = _table(table, "env", cwhere)
        for key, value in env.items():
            check_env_key(key, f"{cwhere}.env")
            if not isinstance(value, str):
                raise InputError(f"{cwhere}.env.{key}: environment values are strings, got {value!r}")
            check_env_value(value, f"{cwhere}.env.{key}")
        adopt = table.get("adopt")
        if adopt is not None:
            adopt = _adopt_choice(adopt, path, f"{cwhere}.adopt", functools.partial(
                _check_adopt, recipe=recipes[name].recipe, version=version))
        keep_debug = table.get("keep_debug", False)
        if not isinstance(keep_debug, bool):  # bool("no") is True: a string must not pass for a switch
            raise InputError(f"{cwhere}.keep_debug: expected true or false, got {keep_debug!r}")
        extra = {}
        for extra_name, extra_table in _table(table, "extra_sources", cwhere).items():
            if not isinstance(extra_table, dict):
                raise InputError(f"{cwhere}.extra_sources.{extra_name}: expected a source table such as "
                                 "{ path = '...' } or { git = '...', ref = '...' }")
            extra[extra_name] = source_from_table(extra_table, f"{cwhere}.extra_sources.{extra_name}", path.parent)
        components[name] = ComponentSpec(name, version, source, env, adopt, keep_debug,
                                         _options(_table(table, "options", cwhere), recipes[name].recipe, cwhere),
                                         extra)

    pins: dict[str, str] = {}
    for name, version in _table(data, "pins", where).items():
        # A pin is written into requirement files as NAME==VERSION: a name that is not a package
        # name ("--extra-index-url http://... #") would be a line of options there.
        check_distribution_name(name, f"{where} [pins]")
        version = _string(version, f"{where} [pins].{name}")
        if name in recipes:
            raise InputError(f"{where} [pins].{name}: {name!r} is a built component; set it under [components.{name}]")
        check_version(version, None, f"{where} [pins].{name}")
        pins[name] = version

    overrides: dict[str, str] = {}
    for name, why in _table(data, "overrides", where).items():
        owhere = f"{where} [overrides].{name}"
        if name not in pins and name not in components:
            raise InputError(f"{owhere}: only a pin or a component can override; add {name} = '<version>' "
                             f"under [pins], or [components.{name}] with its version")
        if isinstance(why, dict):
            raise InputError(f"{owhere}: an override is the reason as a string (the version is the "
                             f"{'component' if name in components else 'pin'}'s), e.g. "
                             f"{name} = \"vLLM pins {name}==X; this release runs Y\"")
        if not isinstance(why, str) or not why.strip():
            raise InputError(f"{owhere}: an override needs its reason, a non-empty string saying why "
                             f"{name} {components[name].version if name in components else pins[name]} wins over "
                             f"what other packages declare; got {why!r}")
        overrides[name] = why.strip()

    description = data.get("description", "")
    return Release(path.stem, path, _string(description, f"{where}.description") if description else "",
                   target_spec, image, components, pins, overrides)
