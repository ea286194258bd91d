"""A JSON Schema for release files, generated from what the release loader accepts.

The keys come from release.py (TOP_KEYS, TARGET_KEYS, IMAGE_KEYS, COMPONENT_KEYS, ...), the source
tables from sources/kinds.py, and each component's properties from its recipe: the version form
(version_pattern) and the options it declares, with their types, defaults and help. So the schema
of the shipped recipes is the one committed as wheelfactory/planning/data/release.schema.json (a test keeps
the two equal), and `wheelfactory release schema` with --recipes-dir includes your own recipes.

Editors that read JSON Schema for TOML (taplo, VS Code's Even Better TOML) check a release file
against it as it is typed: put `#:schema ./release.schema.json` (a path or URL) on the file's first line.

One file is checked alone, so the schema cannot see what an `extends` chain brings in: a file
without `extends` must have [target] and a version per component; one with `extends` need not.
The loader still checks everything the schema cannot say (an override naming a pin, a plain-http
source without allow_insecure, a path that exists); the schema catches the rest while typing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.grammar import ENV_KEY, OCI_REPOSITORY, OCI_TAG
from ..sources.kinds import _FLAGS as SOURCE_FLAGS
from ..sources.kinds import _SOURCE_KEYS as SOURCE_KEYS
from .recipe import LoadedRecipe, Option
from .release import (
    COMPONENT_KEYS,
    IMAGE_KEYS,
    IMAGE_KINDS,
    OPTIONAL_TARGET_KEYS,
    TARGET_KEYS,
    TOP_KEYS,
    known_targets,
)

DRAFT = "http://json-schema.org/draft-07/schema#"  # the draft editors' TOML schema support reads best
SHA256 = "^[0-9a-f]{64}$"
# The forms release.py checks with re.fullmatch (release_schema tests check that both agree).
PYTHON = r"^3\.\d+$"
CUDA = r"^\d+\.\d+(\.\d+)?$"
# The grammars of grammar.py, as ECMA-262 patterns (the loader checks them in full).
PEP508_NAME = r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$"

_JSON_TYPES = {bool: "boolean", int: "integer", str: "string"}
_NON_EMPTY = {"type": "string", "minLength": 1}


SOURCE_REF = {"$ref": "#/definitions/source"}


def _source_schema() -> dict[str, Any]:
    """One of the source kinds, each with exactly its keys (flags are booleans, the rest strings)."""
    kinds = []
    for kind, (allowed, required) in sorted(SOURCE_KEYS.items()):
        properties: dict[str, Any] = {}
        for key in sorted(allowed):
            properties[key] = {"type": "boolean"} if key in SOURCE_FLAGS else {"type": "string"}
            if key == "sha256":
                properties[key]["pattern"] = SHA256
        kinds.append({"title": f"{kind} source", "type": "object", "required": sorted(required),
                      "properties": properties, "additionalProperties": False})
    return {"description": "a source: exactly one of { git, ref }, { url, sha256 }, { pypi }, { path }",
            "oneOf": kinds}


def _option_schema(option: Option) -> dict[str, Any]:
    return {"type": _JSON_TYPES[option.type], "default": option.default, "description": option.help}


def _component_schema(loaded: LoadedRecipe) -> dict[str, Any]:
    recipe = loaded.recipe
    version: dict[str, Any] = dict(_NON_EMPTY)
    if recipe.version_pattern is not None:
        version["pattern"] = f"^(?:{recipe.version_pattern})$"
        version["description"] = f"{recipe.name}'s version, of the form {recipe.version_pattern}"
    else:
        version["description"] = f"{recipe.name}'s version (PEP 440, e.g. 2.10.0)"
    properties: dict[str, Any] = {
        "version": version,
        "source": SOURCE_REF,
        "env": {"type": "object", "additionalProperties": {"type": "string"},
                "propertyNames": {"pattern": f"^{ENV_KEY.pattern}$"},
                "description": "extra build environment (enters the build key)"},
        "adopt": {"oneOf": [_NON_EMPTY, {"type": "array", "items": _NON_EMPTY, "minItems": 1}],
                  "description": "take an existing wheel instead of building: a requirement, a wheel URL or a "
                                 "path to a .whl; or a list of them, of which the first local wheel that exists "
                                 "is taken, else the first requirement or URL"},
        "keep_debug": {"type": "boolean", "default": False,
                       "description": "keep debug symbols in the wheel's shared objects (default: stripped)"},
        "options": {"type": "object", "additionalProperties": False,
                    "properties": {o.name: _option_schema(o) for o in recipe.options},
                    "description": f"{recipe.name}'s options (`wheelfactory list --options`)"},
        "extra_sources": {"type": "object", "additionalProperties": SOURCE_REF,
                          "description": "replacements for the recipe's extra sources, by name"},
    }
    unknown = set(properties) ^ COMPONENT_KEYS
    if unknown:  # the loader and this generator disagree on a component's keys: fix this module
        raise AssertionError(f"release_schema does not describe component keys {sorted(unknown)}")
    return {"type": "object", "description": recipe.summary, "properties": properties,
            "additionalProperties": False}


def release_schema(recipes: Mapping[str, LoadedRecipe]) -> dict[str, Any]:
    """The JSON Schema (draft-07) of a release file for these recipes."""
    target = {
        "python": {"type": "string", "pattern": PYTHON, "description": "MAJOR.MINOR, e.g. 3.12"},
        "cuda": {"type": "string", "pattern": CUDA, "description": "the CUDA version, e.g. 13.1.0"},
        "cuda_arch_list": {"type": "array", "items": {"type": "string"},
                           "description": "CUDA architectures, e.g. [\"12.1a\"]"},
        "platform": {"type": "string", "enum": known_targets()["platforms"],
                     "description": "the wheel platform the release is meant for, e.g. linux_aarch64"},
        "system_cuda": {"type": "boolean", "default": False,
                        "description": "build with the host's CUDA toolkit instead of the release's from wheels"},
    }
    image: dict[str, Any] = {key: dict(_NON_EMPTY) for key in sorted(IMAGE_KEYS)}
    image["kind"] = {"type": "string", "enum": sorted(IMAGE_KINDS)}
    image["tag"]["pattern"] = f"^{OCI_TAG.pattern}$"
    image["repository"]["pattern"] = f"^{OCI_REPOSITORY.pattern}$"
    properties: dict[str, Any] = {
        "extends": dict(_NON_EMPTY, description="a release name or a path to start from"),
        "description": {"type": "string"},
        "target": {"type": "object", "properties": target, "additionalProperties": False},
        "image": {"type": "object", "properties": image, "additionalProperties": False},
        "components": {"type": "object", "additionalProperties": False,
                       "properties": {name: _component_schema(r) for name, r in sorted(recipes.items())}},
        "pins": {"type": "object", "additionalProperties": dict(_NON_EMPTY),
                 "propertyNames": {"not": {"enum": sorted(recipes)}, "pattern": PEP508_NAME},
                 "description": "pure-Python packages from the index at exact versions (a built component "
                                "is set under [components])"},
        "overrides": {"type": "object", "additionalProperties": {"type": "string", "pattern": r"\S"},
                      "description": "a pin or component whose version wins over what other packages "
                                     "declare: name = \"the reason\""},
    }
    for keys, what in ((set(properties), TOP_KEYS), (set(target), TARGET_KEYS | OPTIONAL_TARGET_KEYS)):
        if keys != what:
            raise AssertionError(f"release_schema does not match the loader's keys: {sorted(keys ^ what)}")
    # Without `extends`, the file is a whole release: its target and every component's version.
    whole = {
        "required": ["target"],
        "properties": {
            "target": {"required": sorted(TARGET_KEYS)},
            "components": {"additionalProperties": {"required": ["version"]},
                           "properties": {name: {"required": ["version"]} for name in sorted(recipes)}},
        },
    }
    return {
        "$schema": DRAFT,
        "title": "wheelfactory release",
        "description": "A wheelfactory release file (recipes/releases/*.toml). Generated by "
                       "`wheelfactory release schema` from the release loader and the recipes.",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "if": {"not": {"required": ["extends"]}},
        "then": whole,
        "definitions": {"source": _source_schema()},
    }
