"""Canonical code digests: documenting, annotating, re-ordering imports or moving code changes no
build key; a change of behaviour does, in every declared engine module and in every recipe."""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import pytest

from wheelfactory.core import codehash
from wheelfactory.core.codehash import CANONICAL_FORM, canonical_code, code_digest, file_digest
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning import plan as plan_module

from .conftest import RECIPES, REPO, SPARK

# -- the rules, one by one ---------------------------------------------------------------------

BASE = '''\
"""A module."""
from __future__ import annotations

import json
from dataclasses import dataclass

from .context import BuildContext


@dataclass
class Box:
    """A box."""

    size: int = 0

    def dump(self, ctx, extra):
        """Its JSON."""
        total = self.size + extra
        return json.dumps([total, ctx])


def make(n):
    return BuildContext(n)
'''

SAME = {
    "docstrings edited": BASE.replace('"""A module."""', '"""Another text, several\n\nlines."""')
                             .replace('"""Its JSON."""', '"""Its JSON, explained at length."""'),
    "docstrings removed": BASE.replace('"""A module."""\n', "").replace('        """Its JSON."""\n', "")
                              .replace('    """A box."""\n', ""),
    "comments and blank lines": BASE.replace("        total =", "        # why: the size counts twice\n\n"
                                                             "        total =").replace("import json",
                                                                                       "import json  # stdlib"),
    "parameter and return annotations": BASE.replace("def dump(self, ctx, extra):",
                                                     "def dump(self, ctx: BuildContext, extra: int = 0) -> str:"
                                                     .replace(" = 0", "")).replace("def make(n):",
                                                                                   "def make(n: int) -> BuildContext:"),
    "local annotation": BASE.replace("        total = ", "        total: int = "),
    "typing import for an annotation": BASE.replace("import json\n", "import json\nfrom typing import Any\n")
                                           .replace("def make(n):", "def make(n: Any) -> Any:"),
    "TYPE_CHECKING import": BASE.replace("import json\n", "import json\nfrom typing import TYPE_CHECKING\n"
                                         "if TYPE_CHECKING:\n    from pathlib import Path\n")
                                .replace("def make(n):", "def make(n: Path):"),
    "no __future__ import": BASE.replace("from __future__ import annotations\n", ""),
    "imports re-ordered": BASE.replace("import json\nfrom dataclasses import dataclass\n",
                                       "from dataclasses import dataclass\nimport json\n"),
    "unused import added": BASE.replace("import json\n", "import json\nimport os\n"),
    "module moved (relative import)": BASE.replace("from .context import", "from ..build.context import"),
    "module moved (absolute import)": BASE.replace("from .context import", "from wheelfactory.build.context import"),
    "module renamed": BASE.replace("from .context import", "from .build_context import"),
    "pass or ellipsis for a docstring": BASE.replace('        """Its JSON."""\n', '        ...\n'),
}

DIFFERENT = {
    "a constant": BASE.replace("size: int = 0", "size: int = 1"),
    "an operator": BASE.replace("self.size + extra", "self.size - extra"),
    "a called function": BASE.replace("json.dumps", "json.loads"),
    "a local name": BASE.replace("total", "count"),
    "another package imported": BASE.replace("import json\n", "import simplejson as json\n"),
    "a dataclass field's annotation": BASE.replace("size: int = 0", "size: ClassVar[int] = 0"),
    "a dataclass field": BASE.replace("    size: int = 0\n", "    size: int = 0\n    name: str = ''\n"),
    "a decorator": BASE.replace("@dataclass\n", "@dataclass(frozen=True)\n"),
    "a default value": BASE.replace("def make(n):", "def make(n=1):"),
    "a statement removed": BASE.replace("        total = self.size + extra\n", "        total = extra\n"),
    "a string value": BASE.replace("[total, ctx]", "[total, ctx, 'x']"),
    "the factory name bound": BASE.replace("import BuildContext", "import BuildContext as Ctx")
                                  .replace("return BuildContext(n)", "return Ctx(n)"),
}


@pytest.mark.parametrize("edit", sorted(SAME))
def test_edits_that_do_not_change_behaviour_keep_the_digest(edit):
    compile(SAME[edit], edit, "exec")  # each variant is real Python
    assert SAME[edit] != BASE
    assert code_digest(SAME[edit]) == code_digest(BASE), canonical_code(SAME[edit])


@pytest.mark.parametrize("edit", sorted(DIFFERENT))
def test_behaviour_edits_change_the_digest(edit):
    compile(DIFFERENT[edit], edit, "exec")
    assert code_digest(DIFFERENT[edit]) != code_digest(BASE)


def test_the_canonical_form_written_out():
    """The exact text, hand-written: a field a newer Python adds, or a change of ast.dump's
    defaults, must not change it (the digest would differ between interpreters)."""
    source = '"""Doc."""\nfrom __future__ import annotations\nimport os\nfrom .a import f as g\n\n' \
             'def h(x: int = 2) -> str:\n    """Doc."""\n    y: int = g(x)  # note\n    return os.sep * y\n'
    assert canonical_code(source) == (
        f"{CANONICAL_FORM}\n"
        "Import(names=[alias(name='os')])\n"
        "ImportFrom(module='<wheelfactory>', names=[alias(name='g')])\n"
        "FunctionDef(name='h', args=arguments(args=[arg(arg='x')], defaults=[Constant(value=2)]), "
        "body=[Assign(targets=[Name(id='y', ctx=Store())], value=Call(func=Name(id='g', ctx=Load()), "
        "args=[Name(id='x', ctx=Load())])), Return(value=BinOp(left=Attribute(value=Name(id='os', ctx=Load()), "
        "attr='sep', ctx=Load()), op=Mult(), right=Name(id='y', ctx=Load())))])\n")


def test_f_string_pieces_read_the_same_on_every_python():
    """Python 3.12.1 parses f"{x}{y:>{w}}" with an extra empty literal at the end of the format
    spec, 3.11 and 3.13 without: literal pieces are merged and empty ones dropped. (The digests of
    every module under wheelfactory/, recipes/, tests/ and assemble/ were compared on 3.11.7,
    3.12.1 and 3.13.0: equal.)"""
    x = ast.FormattedValue(ast.Name("x", ast.Load()), -1, None)
    split = ast.JoinedStr([ast.Constant(""), ast.Constant("a"), ast.Constant("b"), x, ast.Constant("")])
    whole = ast.JoinedStr([ast.Constant("ab"), x])
    assert codehash._dump(codehash._Strip().visit(split)) == codehash._dump(whole)


def test_a_bare_local_annotation_stays_as_it_makes_a_name_local():
    with_decl = "x = 1\ndef f():\n    x: int\n    return x\n"
    assert code_digest(with_decl) != code_digest("x = 1\ndef f():\n    return x\n")
    assert code_digest(with_decl) == code_digest("x = 1\ndef f():\n    x: str\n    return x\n")


def test_the_path_and_name_of_a_file_do_not_count(tmp_path):
    a = tmp_path / "context.py"
    b = tmp_path / "deep" / "er" / "build_context.py"
    b.parent.mkdir(parents=True)
    a.write_text(BASE)
    b.write_text(BASE)
    assert file_digest(a) == file_digest(b) == code_digest(BASE)


# -- on the real code: the engine modules and the recipes ----------------------------------------

REAL_ENGINE = plan_module.engine_files()


def no_behaviour_edits(text: str) -> str:
    """What a clean-up does to a real module: its docstrings reworded, a comment before each
    return, return annotations removed, every factory import re-pointed as if each module had
    moved (to wheelfactory.moved.*, which `moved_package` makes importable)."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []  # (line index, column, text to insert), applied bottom-up
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            doc = body[0].value
            quotes = re.match(r"[rbuRBU]*(\"\"\"|'''|\"|')", lines[doc.lineno - 1][doc.col_offset:])
            edits.append((doc.lineno - 1, doc.col_offset + quotes.end(), "Reworded. "))
        if isinstance(node, ast.Return):
            indent = re.match(r"\s*", lines[node.lineno - 1])[0]
            edits.append((node.lineno - 1, 0, f"{indent}# a comment on the next line\n"))
    for line, col, insert in sorted(edits, reverse=True):
        lines[line] = lines[line][:col] + insert + lines[line][col:]
    text = "".join(lines)
    text = re.sub(r"\) -> [^\n]+:$", "):", text, flags=re.MULTILINE)
    text = re.sub(r"^from \.+([\w.]*) import", r"from wheelfactory.moved.\1 import", text, flags=re.MULTILINE)
    text = re.sub(r"^from wheelfactory\.(\w+) import", r"from wheelfactory.moved.\1 import", text,
                  flags=re.MULTILINE)
    return text.replace("wheelfactory.moved. import", "wheelfactory.moved import")


@pytest.fixture
def moved_package(monkeypatch):
    """wheelfactory.moved.X.Y is wheelfactory.X.Y: the recipes' imports after a move, importable."""
    import wheelfactory
    import wheelfactory.recipe_api  # noqa: F401  (loaded, so that it is aliased below)

    monkeypatch.setitem(sys.modules, "wheelfactory.moved", wheelfactory)
    for name, module in list(sys.modules.items()):
        if name.startswith("wheelfactory.") and not name.startswith("wheelfactory.moved"):
            monkeypatch.setitem(sys.modules, "wheelfactory.moved." + name.partition(".")[2], module)


def test_the_clean_up_edit_really_edits_every_file():
    for path in [*REAL_ENGINE.values(), *RECIPES.glob("[!_]*.py")]:
        text = path.read_text()
        edited = no_behaviour_edits(text)
        compile(edited, str(path), "exec")
        assert edited.count("Reworded.") >= 1 and edited.count("# a comment") >= 1, path
        assert "wheelfactory.moved" in edited, path


def moved_engine(tmp_path: Path, edit, only: str | None = None) -> dict[str, Path]:
    """The engine modules written elsewhere under other names, edited (all, or only one)."""
    files = {}
    for name, path in REAL_ENGINE.items():
        if only is None or name == only:
            new = tmp_path / "elsewhere" / name / f"renamed_{name}.py"
            new.parent.mkdir(parents=True)
            new.write_text(edit(path.read_text()))
            files[name] = new
        else:
            files[name] = path
    return files


def plan_keys(recipes: Path, tmp_path: Path, engine: dict[str, Path], monkeypatch) -> dict[str, tuple[str, dict]]:
    monkeypatch.setattr(plan_module, "engine_files", lambda: engine)
    plan_module.engine_sha256.cache_clear()
    try:
        factory = Factory(recipes, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK)
        return {s.component: (s.key, dict(s.key_inputs)) for s in factory.plan(factory.release("0.15.0-t4")).steps}
    finally:
        plan_module.engine_sha256.cache_clear()


def engine_digest_with(engine: dict[str, Path], monkeypatch) -> str:
    monkeypatch.setattr(plan_module, "engine_files", lambda: engine)
    plan_module.engine_sha256.cache_clear()
    try:
        return plan_module.engine_sha256()
    finally:
        plan_module.engine_sha256.cache_clear()


def test_each_engine_module_enters_the_engine_digest(tmp_path, monkeypatch):
    """Every key carries the engine digest (test_recipe_contract.py), and a behaviour edit in any
    one declared module changes it (a clean-up of all of them does not: below)."""
    real = plan_module.engine_sha256()
    for name in plan_module.ENGINE_MODULES:
        changed = moved_engine(tmp_path / name, lambda t: t + "\n_KEY_PROBE = True\n", only=name)
        assert engine_digest_with(changed, monkeypatch) != real, name


@pytest.fixture(scope="module")
def real_keys(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    factory = Factory(RECIPES, tmp / "wh", tmp / "cache", host_probe=lambda: SPARK)
    return {s.component: (s.key, dict(s.key_inputs)) for s in factory.plan(factory.release("0.15.0-t4")).steps}


def test_a_real_behaviour_edit_in_buildenv_rebuilds_everything(tmp_path, monkeypatch, real_keys):
    """SOURCE_DATE_EPOCH (the wheels' timestamps) lives in buildenv.py, which raw-byte keys left out."""
    real = real_keys
    engine = moved_engine(tmp_path, lambda t: t.replace('SOURCE_DATE_EPOCH = "315532800"',
                                                        'SOURCE_DATE_EPOCH = "315532801"'), only="pipeline.buildenv")
    assert engine["pipeline.buildenv"].read_text() != REAL_ENGINE["pipeline.buildenv"].read_text()
    after = plan_keys(RECIPES, tmp_path, engine, monkeypatch)
    assert {c for c in real if after[c][0] != real[c][0]} == set(real)


def test_clean_ups_and_moves_of_engine_and_recipes_change_no_key(tmp_path, monkeypatch, moved_package, real_keys):
    real = real_keys
    moved = tmp_path / "another" / "place" / "recipes"
    shutil.copytree(RECIPES, moved)
    for path in moved.glob("[!_]*.py"):
        path.write_text(no_behaviour_edits(path.read_text()))
    after = plan_keys(moved, tmp_path, moved_engine(tmp_path, no_behaviour_edits), monkeypatch)
    assert after == real  # the key inputs themselves, not only the keys


def test_a_behaviour_edit_in_a_recipe_rekeys_that_recipe(tmp_path, monkeypatch, real_keys):
    real = real_keys
    moved = tmp_path / "recipes"
    shutil.copytree(RECIPES, moved)
    vllm = moved / "vllm.py"
    vllm.write_text(vllm.read_text().replace('BUILT_RE = re.compile(r"Building ', 'BUILT_RE = re.compile(r"Build '))
    assert vllm.read_text() != (RECIPES / "vllm.py").read_text()
    after = plan_keys(moved, tmp_path, REAL_ENGINE, monkeypatch)
    assert {c for c in real if after[c][0] != real[c][0]} == {"vllm"}


def test_engine_modules_are_declared_by_import_name():
    files = plan_module.engine_files()
    assert tuple(files) == plan_module.ENGINE_MODULES
    assert all(p == REPO / "wheelfactory" / f"{name.replace('.', '/')}.py" for name, p in files.items())


# Modules that the key-relevant code (the engine modules and the recipes) imports from the factory
# but that do not enter keys, each with the reason. A new import of the factory's own code from a
# key-relevant module must be decided on: added to plan.ENGINE_MODULES, or here with its reason.
NOT_KEYED = {
    "__init__": "the tool's version: a key input of its own",
    "pipeline.cachestore": "sizes of kept work trees, for messages",
    "toolchain.ccache": "a compiler cache: runtime only, like jobs",
    "cuda.cuda_arch": "its flags reach a build through the env a recipe hook returns, keyed as values",
    "cuda.devicecode": "judges the configure plan: pass or fail, not bytes",
    "core.errors": "messages",
    "sources.fetch": "source trees are named and keyed by their content",
    "host.facts": "jobs and CPUs: runtime only",
    "core.interrupt": "locks and signals",
    "pipeline.outputs": "checks the wheels a build made",
    "planning.plan": "the keys themselves: a change of what enters them shows in the key inputs",
    "run.progress": "the status line",
    "planning.recipe": "the declaration is keyed as data, its data files by sha256",
    "run.runner": "runs commands with the environment it is given, and logs them",
    "core.secretenv": "narrows the inherited environment, which is per machine and never keyed",
    "sources.kinds": "a source enters keys as its identity (commit, sha256)",
    "toolchain.toolkit": "the assembled root is named by LAYOUT_VERSION in the target's toolkit identity",
    "store.wheelhouse": "storage of finished wheels",
    "store.wheelmeta": "reads and checks wheel metadata",
}


def factory_imports(path: Path) -> set[str]:
    """The factory modules a file imports (relative or absolute), by import name below wheelfactory
    (`__init__` for the package's own names)."""
    package = REPO / "wheelfactory"
    here = list(path.parent.relative_to(package).parts) if path.is_relative_to(package) else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
            elif node.module == "wheelfactory" or (node.module or "").startswith("wheelfactory."):
                base = []
                node = ast.ImportFrom(module=node.module.partition(".")[2] or None, names=node.names, level=1)
            else:
                continue
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from .. import __version__`, `from ..cuda import audit`
                sub = f"{module}.{alias.name}".lstrip(".")
                found.add(sub if (package / f"{sub.replace('.', '/')}.py").is_file() else module or "__init__")
    return found


def test_every_factory_module_the_keyed_code_uses_was_decided_on():
    keyed = set(plan_module.ENGINE_MODULES)
    assert not keyed & set(NOT_KEYED)
    used: dict[str, set[str]] = {}
    # recipe_api only re-exports: what recipes take through it counts as theirs.
    api = factory_imports(REPO / "wheelfactory" / "recipe_api.py")
    for path in [*REAL_ENGINE.values(), *RECIPES.glob("[!_]*.py")]:
        for module in factory_imports(path):
            for used_module in (api if module == "recipe_api" else {module}):
                used.setdefault(used_module, set()).add(path.name)
    undecided = {m: sorted(by) for m, by in used.items() if m not in keyed | set(NOT_KEYED)}
    assert not undecided, f"add to plan.ENGINE_MODULES or to NOT_KEYED with a reason: {undecided}"
    assert set(NOT_KEYED) <= set(used), f"no longer imported: {set(NOT_KEYED) - set(used)}"


def test_a_recipe_declaration_is_data_not_code():
    """RECIPE enters keys as its declaration's keyed fields (plan.py); its statement is left out
    of the recipe's code, with the imports only it used."""
    base = ("from wheelfactory.recipe_api import Recipe, GitSource\nRECIPE = Recipe(name='x', source=GitSource('u'))\n"
            "def build(ctx):\n    return ctx.build_wheel()\n")
    estimate = base.replace("source=GitSource('u'))", "source=GitSource('u'), disk_gb=40.0)")
    assert code_digest(estimate, data_names=("RECIPE",)) == code_digest(base, data_names=("RECIPE",))
    assert code_digest(estimate) != code_digest(base)  # only as declared data
    behaviour = base.replace("ctx.build_wheel()", "ctx.build_wheel(extra_args=['-v'])")
    assert code_digest(behaviour, data_names=("RECIPE",)) != code_digest(base, data_names=("RECIPE",))


# -- a recipe's data files: their data, not their layout -----------------------------------------

DATA = '''\
# pins per version
[versions."1.0"]
commit = "abc"   # the tag's commit
deps = ["a", "b"]

[versions."2.0"]
commit = "def"
when = 2026-12-05
'''


@pytest.mark.parametrize("edit", [
    lambda t: "# a new header comment\n\n" + t + "\n# trailing\n",
    lambda t: t.replace("# the tag's commit", "# reworded"),
    lambda t: t.replace('deps = ["a", "b"]', 'deps = [\n  "a",\n  "b",\n]'),
    lambda t: t.split("\n\n")[1] + "\n\n" + t.split("\n\n")[0] + "\n",  # the two tables swapped
])
def test_layout_and_comments_of_a_toml_data_file_do_not_count(tmp_path, edit):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(DATA)
    b.write_text(edit(DATA))
    assert a.read_text() != b.read_text()
    assert codehash.data_digest(a) == codehash.data_digest(b)


@pytest.mark.parametrize("edit", [
    lambda t: t.replace('"abc"', '"abd"'),
    lambda t: t.replace('["a", "b"]', '["b", "a"]'),  # a list's order is data
    lambda t: t.replace("2026-12-05", "2026-12-06"),
    lambda t: t.replace('commit = "def"', 'commit = "def"\nextra = 1'),
])
def test_a_value_edit_in_a_toml_data_file_counts(tmp_path, edit):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(DATA)
    b.write_text(edit(DATA))
    assert codehash.data_digest(a) != codehash.data_digest(b)


def test_other_data_files_and_unparsable_toml_count_as_bytes(tmp_path):
    import hashlib
    for name, text in (("list.txt", "a\n# b\n"), ("broken.toml", "[x\n# c\n")):
        path = tmp_path / name
        path.write_text(text)
        assert codehash.data_digest(path) == hashlib.sha256(text.encode()).hexdigest()
        path.write_text(text + "# more\n")
        assert codehash.data_digest(path) == hashlib.sha256((text + "# more\n").encode()).hexdigest()


def _declared_data_files() -> list[Path]:
    from wheelfactory.planning.recipe import load_recipes
    names = {n for loaded in load_recipes(RECIPES).values() for n in loaded.recipe.data_files}
    return sorted(RECIPES / "data" / n for n in names)


def test_comments_in_the_real_data_files_change_no_key(tmp_path, monkeypatch, real_keys):
    moved = tmp_path / "recipes"
    shutil.copytree(RECIPES, moved)
    declared = _declared_data_files()
    assert {p.name for p in declared} >= {"cuda_wheels.toml", "vllm.toml", "vllm_kernels.toml", "triton.toml"}
    for path in declared:
        copy = moved / "data" / path.name
        text = path.read_text()
        # a comment above every table header and at the end, every comment line reworded
        text = re.sub(r"^(\[)", r"# a table follows\n\1", text, flags=re.MULTILINE)
        text = re.sub(r"^#.*$", "# reworded", text, flags=re.MULTILINE) + "\n# the end\n"
        copy.write_text(text)
        assert copy.read_text() != path.read_text()
    assert plan_keys(moved, tmp_path, REAL_ENGINE, monkeypatch) == real_keys


def test_a_value_edit_in_a_real_data_file_rekeys_its_recipe(tmp_path, monkeypatch, real_keys):
    moved = tmp_path / "recipes"
    shutil.copytree(RECIPES, moved)
    data = moved / "data" / "vllm_kernels.toml"
    text = data.read_text()
    edited = re.sub(r'^(\w+ = ")', r"\1x", text, count=1, flags=re.MULTILINE)
    assert edited != text
    data.write_text(edited)
    after = plan_keys(moved, tmp_path, REAL_ENGINE, monkeypatch)
    assert {c for c in real_keys if after[c][0] != real_keys[c][0]} == {"vllm"}
