"""What a recipe module imports: the one place recipes take the factory's names from.

`from wheelfactory.recipe_api import ...` gives the declaration (Recipe, Option, Repair and the
sources), the hooks' arguments (EnvSpec, Target, BuildContext, FetchContext) and their Protocol,
the data-file readers, the arch-list helpers, errors, and the libraries recipes build with
(cargo, devicecode, wheel packing). docs/RECIPES.md explains each. Where a name is defined inside
the engine may change; this list is what recipes can rely on (tests/test_recipe_api.py checks
that every shipped recipe imports from here only).
"""

from __future__ import annotations

from .core.errors import BuildError, InputError
from .cuda import devicecode
from .cuda.cuda_arch import CudaArch, devices_of, gencode_flags, parse_arch_list, torch_arch_list
from .planning.context import BuildContext, FetchContext
from .planning.recipe import (
    EnvSpec,
    GccNeed,
    HostLibrary,
    Option,
    Recipe,
    RecipeHooks,
    Repair,
    Target,
    recipe_data,
    version_table,
)
from .sources import cargo
from .sources.kinds import GitSource, LocalSource, PypiSource, Source, UrlSource
from .store.wheelmeta import require_pin
from .store.wheelpack import pack_tree, repack, unpack

__all__ = [
    # the declaration
    "Recipe", "Option", "Repair", "GccNeed", "HostLibrary",
    "GitSource", "UrlSource", "PypiSource", "LocalSource", "Source",
    # the hooks and what they receive
    "RecipeHooks", "EnvSpec", "Target", "BuildContext", "FetchContext",
    # declared data files
    "recipe_data", "version_table",
    # CUDA arch lists
    "CudaArch", "parse_arch_list", "devices_of", "torch_arch_list", "gencode_flags",
    # failing a build or a plan
    "BuildError", "InputError",
    # libraries for hooks: Rust crates, the device-code check, wheel files
    "cargo", "devicecode", "pack_tree", "repack", "unpack", "require_pin",
]
