"""Sources behind one interface (sources/kinds.py, SourceKind): each kind keys, describes, resolves
and fetches itself, and the source cache loops over them without asking which kind a source is."""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from wheelfactory.run.runner import Runner
from wheelfactory.sources.fetch import MARKER, SourceCache
from wheelfactory.sources.kinds import (
    UNRESOLVED,
    Asked,
    GitSource,
    LocalSource,
    PypiSource,
    SourceKind,
    UrlSource,
)
from wheelfactory.sources.resolve import SourceRecords

from .conftest import REPO

COMMIT = "a" * 40
SHA = "b" * 64
INDEX = "https://pypi.org/simple/"


@pytest.fixture
def local(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("x")
    return LocalSource(str(tmp_path / "src"))


def test_every_kind_is_a_source_kind(local):
    for source in (GitSource("https://h/r.git", "v1"), UrlSource("https://h/a.tgz", SHA), PypiSource("vllm", "1.0"),
                   local):
        assert isinstance(source, SourceKind), type(source).__name__


def test_each_kind_keys_itself_as_before(local):
    # the identities that enter build keys, unresolved and resolved (tests/golden pins them for a release)
    git = GitSource("https://h/r.git", "v1")
    assert git.identity() == {"git": "https://h/r.git", "ref": "v1", "submodules": True, "unresolved": UNRESOLVED}
    assert git.identity(COMMIT) == {"git_commit": COMMIT, "submodules": True}
    assert GitSource("https://h/r.git", COMMIT, submodules=False).identity() == {"git_commit": COMMIT,
                                                                                "submodules": False}
    assert UrlSource("https://h/a.tgz", None).identity() == {"url": "https://h/a.tgz", "unresolved": UNRESOLVED}
    assert UrlSource("https://h/a.tgz", SHA).identity() == {"archive_sha256": SHA}
    assert PypiSource("vllm", "1.0").identity() == {"pypi": "vllm", "version": "1.0", "unresolved": UNRESOLVED}
    assert PypiSource("vllm", "1.0").identity(SHA) == {"archive_sha256": SHA}
    assert local.identity() == {"tree_sha256": local.identity()["tree_sha256"]}
    assert len(local.identity()["tree_sha256"]) == 64


def test_each_kind_names_its_record_and_its_tree(local, tmp_path):
    trees = tmp_path / "trees"
    cases = [
        (GitSource("https://h/r.git", "v1"), "git https://h/r.git v1", None, trees / f"git-{COMMIT}"),
        (GitSource("https://h/r.git", "v1", submodules=False), "git https://h/r.git v1", None,
         trees / f"git-{COMMIT}-nosub"),
        (GitSource("https://h/r.git", COMMIT), f"git https://h/r.git {COMMIT}", COMMIT, trees / f"git-{COMMIT}"),
        (UrlSource("https://h/a.tgz", None), "url https://h/a.tgz", None, trees / f"sha256-{COMMIT}"),
        (PypiSource("vllm", "1.0", SHA), "pypi https://pypi.org/simple vllm==1.0", SHA, trees / f"sha256-{COMMIT}"),
        (local, None, None, Path(local.path)),
    ]
    for source, record, pinned, tree in cases:
        assert (source.record_key(INDEX), source.pinned(), source.tree_in(trees, COMMIT)) == (record, pinned, tree)


def test_each_kind_describes_where_it_comes_from(local):
    assert GitSource("git@github.com:NVIDIA/nccl.git", "v1").origin(INDEX) == "ssh://github.com"
    assert GitSource("https://h/r.git", "v1").checkout() == ("https://h/r.git", "v1")
    assert GitSource("file:///srv/mirror%20a", "v1").local_repository() == Path("/srv/mirror a")
    assert PypiSource("vllm", "1.0").origin(INDEX) == INDEX
    assert UrlSource("https://h/a.tgz", SHA).origin(INDEX) == "https://h/a.tgz"
    assert [s.checkout() for s in (UrlSource("https://h/a.tgz", SHA), PypiSource("vllm"), local)] == [None] * 3
    assert local.in_place() == Path(local.path)
    assert [s.in_place() for s in (GitSource("https://h/r.git", "v1"), PypiSource("vllm"))] == [None, None]


def test_the_contents_a_cache_has_seen_each_kind_stand_for(tmp_path, local):
    records = SourceRecords(tmp_path / "resolved.json")
    records.put("git https://h/r.git v1", {"commit": COMMIT, "kind": "tag"})
    records.put("url https://h/a.tgz", {"sha256": SHA})
    records.put("pypi https://pypi.org/simple vllm==1.0", {"sha256": "1" * 64})
    records.put("pypi https://mirror/simple vllm==1.0", {"sha256": "2" * 64})
    records.put("pypi https://mirror/simple vllm==1.1", {"sha256": "3" * 64})
    assert GitSource("https://h/r.git", "v1").known_contents(records) == {COMMIT}
    assert GitSource("https://h/r.git", "c" * 40).known_contents(records) == {"c" * 40}
    assert UrlSource("https://h/a.tgz", None).known_contents(records) == {SHA}
    assert PypiSource("vllm", "1.0", "0" * 64).known_contents(records) == {"0" * 64, "1" * 64, "2" * 64}
    assert local.known_contents(records) == set()


@dataclass(frozen=True)
class InlineSource:
    """A fifth kind, made here only: files given inline, named by a label until `ask` resolves it."""

    label: str
    files: tuple[tuple[str, str], ...]

    RECORDED_ONCE: ClassVar[bool] = False

    def _digest(self) -> str:
        return hashlib.sha256(repr(self.files).encode()).hexdigest()

    def with_version(self, version: str) -> InlineSource:
        return self

    def identity(self, content: str | None = None) -> dict[str, Any]:
        return {"inline_sha256": content} if content else {"inline": self.label, "unresolved": UNRESOLVED}

    def pinned(self) -> str | None:
        return None

    def record_key(self, index_url: str) -> str | None:
        return f"inline {self.label}"

    def content_of(self, entry):
        return entry["sha256"]

    def known_contents(self, records):
        entry = records.get(f"inline {self.label}")
        return {entry["sha256"]} if entry else set()

    def describe(self) -> str:
        return f"inline:{self.label}"

    def origin(self, index_url: str) -> str:
        return "inline"

    def local_repository(self):
        return None

    def checkout(self):
        return None

    def in_place(self):
        return None

    def tree_in(self, trees: Path, content: str) -> Path:
        return trees / f"inline-{content}"

    def ask(self, cache, runner) -> Asked:
        return Asked({"sha256": self._digest()}, self._digest(), f"inline {self.label}")

    def moved_hint(self, before: str) -> str:
        return ""

    def fetch_into(self, cache, content, tmp, runner):
        top = tmp / "t"
        top.mkdir()
        for name, text in self.files:
            (top / name).write_text(text)
        return top, {"inline": self.label}


def test_a_new_kind_is_one_class_the_cache_resolves_and_fetches_unchanged(tmp_path):
    source = InlineSource("demo", (("setup.py", "print()\n"),))
    assert isinstance(source, SourceKind)
    cache = SourceCache(tmp_path / "cache")
    runner = Runner("t", tmp_path / "log")
    assert cache.recorded(source) is None  # unresolved: keyed by name until resolved
    tree = cache.fetch(source, runner)  # resolves, records, then fetches into its own tree
    digest = source._digest()
    assert tree == tmp_path / "cache" / "sources" / "trees" / f"inline-{digest}"
    assert (tree / "setup.py").read_text() == "print()\n" and (tree / MARKER).is_file()
    assert cache.recorded(source) == digest
    assert SourceCache(tmp_path / "cache").fetch(source, runner, offline=True) == tree  # found again offline


def test_no_module_asks_which_kind_a_source_is():
    kinds = {"GitSource", "UrlSource", "PypiSource", "LocalSource"}
    found = []
    for path in sorted((REPO / "wheelfactory").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if names & kinds:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, "ask the source (sources/kinds.py, SourceKind) instead of its kind: " + ", ".join(found)
