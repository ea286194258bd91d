"""The wheelhouse is meant to be shared: what the factory writes there has the modes open() and
mkdir() give under the user's umask (not mkstemp's 0600 / mkdtemp's 0700), and staged/ keeps no
second copy of a published wheel."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from tests.test_executor import OK_BODY, setup
from wheelfactory.store.wheelhouse import atomic_write_text


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_honours_the_umask(tmp_path, umask022):
    atomic_write_text(tmp_path / "a", "x")
    assert mode(tmp_path / "a") == 0o644
    os.umask(0o077)
    atomic_write_text(tmp_path / "b", "x")
    assert mode(tmp_path / "b") == 0o600


@pytest.mark.slow  # runs a build: venv, pip
def test_published_wheelhouse_is_world_readable_and_staged_is_emptied(tmp_path, umask022):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"), ("a",))
    f.executor(plan, echo=lambda m: None, python=shutil.which("python3")).build()
    root = f.wheelhouse.root
    assert mode(root / "manifest.json") == 0o644
    assert mode(root / "simple") == 0o755
    assert mode(root / "simple" / "index.html") == 0o644
    assert mode(root / "simple" / "a") == 0o755
    assert all(mode(p) == 0o644 for p in root.glob("*.whl*"))  # the wheels and their PEP 658 metadata
    staged = f.cache_dir / "staged"
    assert not staged.exists() or list(staged.iterdir()) == []
