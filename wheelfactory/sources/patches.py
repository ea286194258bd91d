"""Patches to upstream sources: declared per component and version, keyed, applied loudly.

Where upstream's build drops or rewrites something the release needs (vLLM's CMake turning
12.1a into 12.0), the fix is a patch file in the repository, not a sed in a recipe:

    recipes/patches/<component>/<version>/<name>.patch      a unified diff; the text before the
                                                            first `diff`/`---` line says why, with
                                                            the upstream PR or issue
    recipes/data/patches.toml                               which patches a (component, version)
                                                            takes, and on which tree

    ["vllm"."0.14.1"]
    source = ["0001-cmake-keep-sm121.patch"]              # the component's own source tree
    flash_attn = ["0001-fa3-only-for-hopper.patch"]       # an extra source (vLLM's CMake deps)

Each patch's sha256 enters the build key, so editing one rebuilds exactly the components that
take it. They are applied in the prepare phase, in the order listed, with `git apply` (a check
first, so a patch that does not apply fails with its name and git's reason, and the tree is left
as it was).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import BuildError, InputError
from ..run.runner import Runner

SOURCE = "source"  # the tree name for the component's own source


@dataclass(frozen=True)
class Patch:
    name: str  # <component>/<version>/<file>, relative to recipes/patches
    path: Path
    sha256: str

    def identity(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


def declared_patches(recipes_dir: Path, component: str, version: str, trees: tuple[str, ...] = (),
                     known: tuple[str, ...] = ()) -> dict[str, tuple[Patch, ...]]:
    """The patches recipes/data/patches.toml declares for a component version, by tree.

    `trees` are the extra sources the step has: patches for them (and "source") are returned.
    `known` adds trees the component version can have with other options (vLLM's CMake
    dependencies when a release turns kernels off): their patches are checked but not returned.
    A patch for any other tree is an error naming it.
    """
    table_path = recipes_dir / "data" / "patches.toml"
    if not table_path.exists():
        return {}
    try:
        with open(table_path, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{table_path}: not valid TOML: {e}") from None
    entry = table.get(component, {}).get(version, {})
    if not isinstance(entry, Mapping):
        raise InputError(f"{table_path}: [\"{component}\".\"{version}\"] must be a table of tree = [patch files]")
    out: dict[str, tuple[Patch, ...]] = {}
    for tree, files in entry.items():
        if tree != SOURCE and tree not in trees and tree not in known:
            names = ", ".join(dict.fromkeys([SOURCE, *trees, *known]))
            raise InputError(f"{table_path}: [\"{component}\".\"{version}\"] {tree} is not a source tree of "
                             f"{component} {version} (known: {names})")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise InputError(f"{table_path}: [\"{component}\".\"{version}\"] {tree} must be a list of file names")
        patches = []
        for name in files:
            rel = f"{component}/{version}/{name}"
            path = recipes_dir / "patches" / rel
            if not path.is_file():
                raise InputError(f"{table_path}: [\"{component}\".\"{version}\"] {tree} names {name!r}, "
                                 f"but {path} does not exist")
            patches.append(Patch(rel, path, hashlib.sha256(path.read_bytes()).hexdigest()))
        if tree == SOURCE or tree in trees:
            out[tree] = tuple(patches)
    return out


def apply_patches(tree: Path, patches: tuple[Patch, ...], runner: Runner, component: str) -> None:
    """Apply patches to a private copy of a source tree, each checked before it is applied."""
    # A ceiling directory keeps git from taking a repository above the tree (a checkout holding
    # the cache, say) as the one to patch: paths stay relative to the tree.
    env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}
    for patch in patches:
        for check in (True, False):
            cmd = ["git", "apply", "-p1", "--whitespace=nowarn", *(["--check"] if check else []), "--", patch.path]
            try:
                runner.run(cmd, cwd=tree, env=env)
            except BuildError as e:
                raise BuildError(f"[{component}] patch {patch.name} does not apply to {tree.name}: upstream "
                                 f"changed the patched lines; refresh the patch or drop it from "
                                 f"recipes/data/patches.toml\n{e}") from None
        runner.note(f"applied patch {patch.name} ({patch.sha256[:12]})")
