"""Reading the assembler's data files (assemble/data/*.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"


def load_data(name: str, data_dir: Path = DATA_DIR) -> dict[str, Any]:
    """One data file's table, e.g. load_data('bases')."""
    with open(data_dir / f"{name}.toml", "rb") as f:
        return tomllib.load(f)
