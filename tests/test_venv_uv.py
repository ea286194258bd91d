"""`wheelfactory venv` installs the lock with uv (seconds) and falls back to pip without it."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

from wheelfactory.lock import venv as venv_mod
from wheelfactory.lock.closure import LOCK_FORMAT
from wheelfactory.lock.venv import create_venv, install_command
from wheelfactory.store.wheelhouse import Wheelhouse
from wheelfactory.toolchain import installer as installer_mod


class FakeRunner:
    """Records commands instead of running them; `python -m venv` makes the directory."""

    def __init__(self):
        self.commands: list[list[str]] = []
        self.notes: list[str] = []

    def run(self, cmd, **kw):
        argv = [str(c) for c in cmd]
        self.commands.append(argv)
        if argv[1:3] == ["-m", "venv"]:
            Path(argv[3], "bin").mkdir(parents=True)
        return ""

    def note(self, text):
        self.notes.append(text)


def locked_wheelhouse(tmp_path: Path) -> Wheelhouse:
    wh = Wheelhouse(tmp_path / "wh")
    wh.locks_dir.mkdir(parents=True)
    lock = {"format": LOCK_FORMAT, "release": "r", "python": "3.11", "platform": "linux_x86_64",
            "top_level": ["six"], "packages": [{"name": "six", "version": "1.17.0",
                                                "filename": "six-1.17.0-py2.py3-none-any.whl", "sha256": "0" * 64,
                                                "component": None, "origin": "pypi"}]}
    (wh.locks_dir / "r.json").write_text(json.dumps(lock))
    (wh.locks_dir / "r.txt").write_text("six==1.17.0 --hash=sha256:" + "0" * 64 + "\n")
    return wh


def test_uv_installs_the_exact_hashed_set_from_the_wheelhouse_alone(tmp_path):
    cmd = install_command("/bin/uv", Path("/v/bin/python"), Path("/wh"), Path("/wh/locks/r.txt"), Path("/c/uv"))
    assert cmd == ["/bin/uv", "pip", "install", "--no-config", "--python", "/v/bin/python", "--no-index",
                   "--find-links", "/wh", "--require-hashes", "--no-deps", "-r", "/wh/locks/r.txt",
                   "--cache-dir", "/c/uv"]
    pip = install_command(None, Path("/v/bin/python"), Path("/wh"), Path("/wh/locks/r.txt"), None)
    assert pip[:4] == ["/v/bin/python", "-m", "pip", "install"] and "--require-hashes" in pip and "--no-deps" in pip


def test_venv_uses_uv_when_there_is_one(tmp_path, monkeypatch):
    monkeypatch.setattr(venv_mod, "find_uv", lambda: "/opt/uv")
    runner = FakeRunner()
    create_venv(tmp_path / "v", "r", locked_wheelhouse(tmp_path), {}, "python3.11", runner)
    installs = [c for c in runner.commands if "install" in c]
    assert len(installs) == 1 and installs[0][:3] == ["/opt/uv", "pip", "install"]
    assert installs[0][installs[0].index("--python") + 1] == str(tmp_path / "v" / "bin" / "python")
    assert any(c[1:4] == ["-m", "pip", "check"] for c in runner.commands)  # the same consistency check


def test_venv_falls_back_to_pip_without_uv_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(venv_mod, "find_uv", lambda: None)
    runner = FakeRunner()
    create_venv(tmp_path / "v", "r", locked_wheelhouse(tmp_path), {}, "python3.11", runner)
    (install,) = [c for c in runner.commands if "install" in c]
    assert install[1:4] == ["-m", "pip", "install"]
    assert runner.notes == ["uv not found: installing with pip (slower)"]


def test_pip_on_request(tmp_path, monkeypatch):
    monkeypatch.setattr(venv_mod, "find_uv", lambda: "/opt/uv")
    runner = FakeRunner()
    create_venv(tmp_path / "v", "r", locked_wheelhouse(tmp_path), {}, "python3.11", runner, use_uv=False)
    assert [c for c in runner.commands if "install" in c][0][1:4] == ["-m", "pip", "install"]


def test_find_uv_is_the_uv_packages_never_one_on_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "uv", types.SimpleNamespace(find_uv_bin=lambda: "/site/bin/uv"))
    assert installer_mod.find_uv() == "/site/bin/uv"

    def missing():
        raise FileNotFoundError

    monkeypatch.setitem(sys.modules, "uv", types.SimpleNamespace(find_uv_bin=missing))
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/uv" if name == "uv" else None)
    assert installer_mod.find_uv() is None  # a tool install has only wheelfactory on PATH


def test_clear_replaces_a_venv_and_nothing_else(tmp_path, monkeypatch):
    import pytest

    from wheelfactory.core.errors import InputError

    monkeypatch.setattr(venv_mod, "find_uv", lambda: "/opt/uv")
    wh = locked_wheelhouse(tmp_path)
    old = tmp_path / "v"
    (old / "lib").mkdir(parents=True)
    (old / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (old / "lib" / "stale.py").write_text("")
    with pytest.raises(InputError, match="exists and is not empty; .* or pass --clear"):
        create_venv(old, "r", wh, {}, "python3.11", FakeRunner())
    create_venv(old, "r", wh, {}, "python3.11", FakeRunner(), clear=True)
    assert not (old / "lib" / "stale.py").exists() and (old / "bin").is_dir()
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="is not a virtual environment \\(no pyvenv.cfg\\)"):
        create_venv(mine, "r", wh, {}, "python3.11", FakeRunner(), clear=True)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_clear_through_a_symbolic_link_is_refused_and_removes_nothing(tmp_path, monkeypatch):
    """`venv LINK --clear` where LINK points at a venv: bad input naming the link and where it points
    (was: shutil.rmtree's OSError), the venv and the link left as they were."""
    import pytest

    from wheelfactory.core.errors import InputError

    monkeypatch.setattr(venv_mod, "find_uv", lambda: "/opt/uv")
    wh = locked_wheelhouse(tmp_path)
    real = tmp_path / "real-venv"
    (real / "lib").mkdir(parents=True)
    (real / "pyvenv.cfg").write_text("home = /usr/bin\n")
    link = tmp_path / "v"
    link.symlink_to(real)
    runner = FakeRunner()
    with pytest.raises(InputError) as e:
        create_venv(link, "r", wh, {}, "python3.11", runner, clear=True)
    assert str(e.value) == (f"{link} is a symbolic link (to {real}); --clear replaces only a venv directory "
                            f"itself, never through a link: pass {real}, or remove the link")
    assert e.value.exit_code == 2 and runner.commands == []
    assert link.is_symlink() and (real / "pyvenv.cfg").is_file() and (real / "lib").is_dir()
