"""Canonical code digests: what a Python module does, without how it is written down or where.

Recipe modules and the engine modules that shape wheels enter build keys as code (plan.py). A
digest of their file bytes made every docstring fix, comment, type annotation, import re-order
or module move a change of every key, and the next build recompiled everything (torch alone
takes hours). So a module enters a key as its parsed code with what cannot change its behaviour
removed (Spack's package hashes strip docstrings the same way):

- comments and layout (the parser never sees them), docstrings and every other statement that
  is a bare constant (a string, `...`), and `pass`;
- type annotations of parameters and return values, and of assignments outside class bodies
  (`x: int = f()` counts as `x = f()`; a bare `x: int` at module level is dropped, in a function
  it stays without its type, as it makes `x` local); `if TYPE_CHECKING:` blocks;
  `from __future__ import annotations`;
- imported names the module never uses (so an import added for an annotation, or an unused one
  removed, changes nothing);
- where the factory's own names come from: an import from `wheelfactory` (absolute or relative,
  any depth) counts as the name it binds, so moving or renaming a module leaves its importers'
  code unchanged; module-level imports count as a set (order and grouping do not matter);
- the file's name and path: the digest is of the code alone;
- for a recipe, its `RECIPE = Recipe(...)` statement: the declaration enters keys as data (the
  fields that shape a build), so a host estimate added to it or a field re-ordered changes no key.

What stays: every statement that runs, every name and value, decorators, imports from other
packages, and annotations in class bodies (a dataclass's annotations are its fields: `x: int = 0`
declares one, `x = 0` does not).

Not seen, on purpose: code that reads its own docstrings (`__doc__`) or annotations at run time
(no key-relevant module does), and which factory object an import binds: `from .a import f`
and `from .b import f` are the same import, as a move must be. What a bound name refers to is
keyed where its own module is (plan.ENGINE_MODULES), not through its importers.

The canonical text is written by this module (not `ast.dump`, whose output varies between Python
versions: 3.12 added fields, 3.13 omits empty ones), and an f-string's literal pieces are merged
(3.12 splits them differently), so the same code gives the same digest on every supported Python.
CANONICAL_FORM names this format; a change to the rules above changes every key, and
plan.KEY_FORMAT is bumped with it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path

# The version of the canonical form below; it is the first line of every canonical text.
CANONICAL_FORM = "wheelfactory-canonical-code/1"
# The same for a recipe's TOML data files (data_digest).
DATA_FORM = "wheelfactory-canonical-toml/1"

# Imports from this package count by the name they bind, wherever the module lives.
PACKAGE = "wheelfactory"
_INTERNAL = "<" + PACKAGE + ">"


def canonical_code(source: str | bytes, filename: str = "<code>", data_names: tuple[str, ...] = ()) -> str:
    """The canonical text of a module's code (see the module docstring); SyntaxError if it does not
    parse. Module-level assignments to `data_names` are left out: their values enter keys as data
    (a recipe's RECIPE, keyed as its declaration), and the imports only they used go with them."""
    tree = ast.parse(source, filename=filename)
    tree = _Strip().visit(tree)
    tree.body = [s for s in tree.body if not _assigns(s, data_names)]
    _drop_unused_imports(tree)
    tree.body = _import_set(tree.body) + [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    return CANONICAL_FORM + "\n" + "\n".join(_dump(stmt) for stmt in tree.body) + "\n"


@functools.lru_cache(maxsize=256)
def code_digest(source: str | bytes, filename: str = "<code>", data_names: tuple[str, ...] = ()) -> str:
    """sha256 of a module's canonical code (remembered by source: a plan hashes each module once)."""
    return hashlib.sha256(canonical_code(source, filename, data_names).encode()).hexdigest()


def file_digest(path: Path) -> str:
    """The canonical code digest of a Python file (its path does not enter it)."""
    return code_digest(path.read_bytes(), str(path))


def data_digest(path: Path) -> str:
    """sha256 of a recipe's data file as the data it holds. A TOML file enters as its parsed tables
    (canonical JSON: sorted keys, no layout), so a comment, a re-ordered table or a re-wrapped
    array changes no key while a changed value does; any other file enters as its bytes. A TOML
    file that does not parse is hashed as bytes: reading it is where the user hears of it."""
    raw = path.read_bytes()
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(raw.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            return hashlib.sha256(raw).hexdigest()
        # dates and times (TOML has them) as their ISO text; a float stays a float
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256((DATA_FORM + "\n" + text).encode()).hexdigest()
    return hashlib.sha256(raw).hexdigest()


def set_digest(digests: Iterable[str]) -> str:
    """One digest for a set of modules' digests: independent of their names, paths and order."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


# -- the rules -----------------------------------------------------------------------------------

def _assigns(stmt: ast.stmt, names: tuple[str, ...]) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
    return len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id in names


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


class _Strip(ast.NodeTransformer):
    """Removes docstrings, no-op statements, annotations outside class bodies and
    TYPE_CHECKING blocks; renames the factory's own modules in imports."""

    def __init__(self) -> None:
        self.scopes = ["module"]

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        # A body left empty was only a docstring or `pass`: all such bodies read the same.
        if isinstance(getattr(node, "body", None), list) and not node.body and not isinstance(node, ast.Module):
            node.body = [ast.Pass()]
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if isinstance(node.value, ast.Constant):  # a docstring, `...`: evaluates a constant, does nothing
            return None
        return self.generic_visit(node)

    def visit_Pass(self, node: ast.Pass) -> None:
        return None

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        # An f-string's literal parts as one piece each: Python 3.12 splits them differently
        # (and adds empty ones) from 3.11 and 3.13 for the same source.
        self.generic_visit(node)
        values: list[ast.expr] = []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                if not part.value:
                    continue
                if values and isinstance(values[-1], ast.Constant) and isinstance(values[-1].value, str):
                    values[-1] = ast.Constant(values[-1].value + part.value)
                    continue
            values.append(part)
        node.values = values
        return node

    def visit_If(self, node: ast.If) -> ast.AST | list[ast.stmt]:
        if _is_type_checking(node.test):  # never runs: imports for annotations only
            kept: list[ast.stmt] = []
            for stmt in node.orelse:
                new = self.visit(stmt)
                kept += new if isinstance(new, list) else [new] if new is not None else []
            return kept
        return self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.scopes.append("class")
        try:
            return self.generic_visit(node)
        finally:
            self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.returns = None
        a = node.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                arg.annotation = None
        self.scopes.append("function")
        try:
            return self.generic_visit(node)
        finally:
            self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        scope = self.scopes[-1]
        if scope == "class":  # a field of a dataclass, NamedTuple or Protocol: part of the code
            return self.generic_visit(node)
        if node.value is not None:
            return self.generic_visit(ast.Assign(targets=[node.target], value=node.value))
        if scope == "module":
            return None
        # In a function, `x: int` makes x a local name: kept, without its type.
        return ast.AnnAssign(target=self.visit(node.target), annotation=ast.Constant(None), simple=1)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | None:
        if node.module == "__future__":
            node.names = [a for a in node.names if a.name != "annotations"]
            return node if node.names else None
        if node.level or node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
            names = [ast.alias(name=a.asname or a.name) for a in node.names]
            return ast.ImportFrom(module=_INTERNAL, names=names, level=0)
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        internal = [a for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")]
        if not internal:
            return node
        # `import wheelfactory.x as y` binds y (without `as`: the package name itself).
        names = [ast.alias(name=a.asname or PACKAGE) for a in internal]
        rest = [a for a in node.names if a not in internal]
        return [ast.ImportFrom(module=_INTERNAL, names=names, level=0)] + ([ast.Import(names=rest)] if rest else [])


def _bound(alias: ast.alias, node: ast.Import | ast.ImportFrom) -> str:
    """The name an import binds: `import a.b` binds a."""
    if alias.asname:
        return alias.asname
    return alias.name.split(".")[0] if isinstance(node, ast.Import) else alias.name


def _used_names(tree: ast.Module) -> set[str]:
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for stmt in tree.body:  # names a star import of this module re-exports
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets):
            used |= {e.value for e in ast.walk(stmt.value) if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return used


def _drop_unused_imports(tree: ast.Module) -> None:
    used = _used_names(tree)

    class Drop(ast.NodeTransformer):
        def visit_Import(self, node: ast.Import) -> ast.AST | None:
            node.names = [a for a in node.names if _bound(a, node) in used]
            return node if node.names else None

        def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | None:
            node.names = [a for a in node.names if a.name == "*" or _bound(a, node) in used]
            return node if node.names else None

    Drop().visit(tree)
    for node in ast.walk(tree):  # a block that held only dropped imports reads as `pass`
        if isinstance(getattr(node, "body", None), list) and not node.body and not isinstance(node, ast.Module):
            node.body = [ast.Pass()]


def _import_set(body: list[ast.stmt]) -> list[ast.stmt]:
    """The module-level imports, one name each, sorted: their order and grouping do not matter."""
    single: dict[str, ast.stmt] = {}
    for stmt in body:
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                one: ast.stmt = ast.Import(names=[a])
                single[_dump(one)] = one
        elif isinstance(stmt, ast.ImportFrom):
            for a in stmt.names:
                one = ast.ImportFrom(module=stmt.module, names=[a], level=stmt.level)
                single[_dump(one)] = one
    return [single[k] for k in sorted(single)]


# -- the text ------------------------------------------------------------------------------------

def _dump(node: object) -> str:
    """A node as text: its class and non-empty fields, no positions. Fields that are None or an
    empty list are left out, so a field a newer Python adds (type_params) reads the same."""
    if isinstance(node, ast.AST):
        parts = []
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(node, ast.Constant) and name == "kind":
                continue  # u"x" is "x"
            if name == "level" and not value:
                continue
            if isinstance(node, ast.Constant) and name == "value":
                parts.append(f"value={value!r}")
            elif value is not None and value != []:
                parts.append(f"{name}={_dump(value)}")
        return f"{type(node).__name__}({', '.join(parts)})"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(v) for v in node) + "]"
    return repr(node)
