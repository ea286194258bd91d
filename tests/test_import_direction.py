"""Imports run one way: docs/ARCHITECTURE.md's table of packages, in import order, against the code.

A module may import modules of its own row and of the rows above it, never of a row below. Every
import counts: module level, inside functions, under `if TYPE_CHECKING:`. The rows are read from
the document, so the table and the code cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from .conftest import REPO

ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
# The trees whose imports are checked; tests, bench and tools may import anything.
CHECKED = ("wheelfactory", "assemble", "recipes")
# The package's own face (`__version__`) sits under every row.
FACE = "wheelfactory/__init__.py"


def table_rows(text: str) -> list[str]:
    """The first cell of each row of the "Packages, in import order" table, top to bottom."""
    section = text.split("## Packages, in import order", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


ROWS = table_rows(ARCHITECTURE.read_text())


def row_of(path: str, rows: list[str]) -> int | None:
    """The row a repository path belongs to: the longest row path that holds it."""
    best = None
    for i, row in enumerate(rows):
        if (path == row or (row.endswith("/") and path.startswith(row))) and (
                best is None or len(row) > len(rows[best])):
            best = i
    return best


def module_path(dotted: str, root: Path) -> str | None:
    """`wheelfactory.core.errors` -> wheelfactory/core/errors.py (or the package's __init__.py)."""
    if dotted.split(".")[0] not in CHECKED:
        return None
    base = Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return base.as_posix() + ".py"  # not there: reported as in no row


def imported_paths(rel: str, source: str, root: Path) -> list[tuple[int, str, str]]:
    """(line, import as written, repository path imported) for each factory import of a file."""
    here = rel.split("/")[:-1]
    found = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}", module_path(a.name, root)) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(here):
                    continue
                dotted = ".".join([*here[:len(here) - node.level + 1], *([node.module] if node.module else [])])
            else:
                dotted = node.module or ""
            written = f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
            for alias in node.names:
                # `from wheelfactory import x` / `from ..cuda import audit`: the name may be a module
                sub = module_path(f"{dotted}.{alias.name}", root) if dotted else None
                if sub and (root / sub).is_file():
                    found.append((node.lineno, written, sub))
                else:
                    found.append((node.lineno, written, module_path(dotted, root)))
    return [(line, written, path) for line, written, path in found if path]


def upward_imports(rel: str, source: str, rows: list[str], root: Path) -> list[str]:
    """Each import of `rel` that names a module of a lower row, or of no row, as a readable line."""
    own = row_of(rel, rows)
    assert own is not None, f"{rel} is in no row of docs/ARCHITECTURE.md's table"
    bad = []
    for line, written, path in imported_paths(rel, source, root):
        if path == FACE:
            continue
        target = row_of(path, rows)
        if target is None:
            bad.append(f"{rel}:{line}: {written} -> {path}, which is in no row of the table")
        elif target > own:
            bad.append(f"{rel}:{line}: {written} -> {path} runs back up ({rows[own]} may not import {rows[target]})")
    return bad


def checked_files() -> list[str]:
    return sorted(p.relative_to(REPO).as_posix() for top in CHECKED for p in (REPO / top).rglob("*.py")
                  if "__pycache__" not in p.parts and p.relative_to(REPO).as_posix() != FACE)


def test_the_table_names_every_package_and_only_what_exists():
    assert ROWS[0] == "wheelfactory/core/" and ROWS[-1] == "wheelfactory/__main__.py"
    assert len(set(ROWS)) == len(ROWS)
    missing = [row for row in ROWS if not (REPO / row).exists()]
    assert not missing, f"docs/ARCHITECTURE.md names what is not there: {missing}"
    packages = {f"{p.parent.relative_to(REPO).as_posix()}/" for p in (REPO / "wheelfactory").glob("*/__init__.py")}
    assert packages <= set(ROWS), f"packages missing from the table: {sorted(packages - set(ROWS))}"
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "wheelfactory").glob("*.py")}
    assert modules - {FACE} <= set(ROWS), f"top-level modules missing from the table: {sorted(modules - set(ROWS))}"


def test_no_import_runs_back_up():
    bad = [msg for rel in checked_files() for msg in upward_imports(rel, (REPO / rel).read_text(), ROWS, REPO)]
    assert not bad, "imports against docs/ARCHITECTURE.md's order:\n" + "\n".join(bad)


@pytest.mark.parametrize(("rel", "source", "expected"), [
    # a helper at the ground that reaches the command line: caught, also inside a function
    ("wheelfactory/core/errors.py", "def f():\n    from ..cli.app import main\n",
     ["wheelfactory/core/errors.py:2: from ..cli.app import main -> wheelfactory/cli/app.py runs back up "
      "(wheelfactory/core/ may not import wheelfactory/cli/)"]),
    # TYPE_CHECKING imports count too
    ("wheelfactory/store/wheelhouse.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from wheelfactory.pipeline.factory import Factory\n",
     ["wheelfactory/store/wheelhouse.py:3: from wheelfactory.pipeline.factory import Factory -> "
      "wheelfactory/pipeline/factory.py runs back up (wheelfactory/store/ may not import wheelfactory/pipeline/)"]),
    # `from .. import x` names the module x
    ("wheelfactory/cuda/audit.py", "from .. import recipe_api\n",
     ["wheelfactory/cuda/audit.py:1: from .. import recipe_api -> wheelfactory/recipe_api.py runs back up "
      "(wheelfactory/cuda/ may not import wheelfactory/recipe_api.py)"]),
    # a module that no row holds
    ("wheelfactory/cli/app.py", "from wheelfactory.nowhere import x\n",
     ["wheelfactory/cli/app.py:1: from wheelfactory.nowhere import x -> wheelfactory/nowhere.py, "
      "which is in no row of the table"]),
    # down, sideways inside a package, the face, and other packages: all fine
    ("wheelfactory/pipeline/executor.py", "from .. import __version__\nfrom ..core.errors import BuildError\n"
     "from .stepbuild import StepBuild\nfrom ..cuda import audit\nimport json\nfrom click import echo\n", []),
    ("recipes/vllm.py", "from wheelfactory.recipe_api import Recipe\n", []),
    ("assemble/cli.py", "from wheelfactory.lock.closure import lock_paths\nfrom .spec import ImageSpec\n", []),
])
def test_the_check_reads_imports_as_they_are_written(rel, source, expected):
    assert upward_imports(rel, source, ROWS, REPO) == expected


def test_a_row_holds_its_longest_path():
    rows = ["wheelfactory/a/", "wheelfactory/a/b.py", "wheelfactory/"]
    assert [row_of(p, rows) for p in ("wheelfactory/a/x.py", "wheelfactory/a/b.py", "wheelfactory/c.py",
                                      "assemble/x.py")] == [0, 1, 2, None]
