"""How a build venv is made: `uv venv` when the builds install with uv (no ensurepip run: minutes per
build venv under qemu), `python -m venv` with pip; seeded with pip only when online."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wheelfactory.pipeline.provenance import venv_python_version
from wheelfactory.run.runner import Runner
from wheelfactory.toolchain.installer import PipInstaller, UvInstaller, find_uv


class FakeRunner:
    def __init__(self):
        self.calls: list[tuple[list[str], dict | None]] = []

    def run(self, cmd, *, env=None, **kw):
        self.calls.append(([str(c) for c in cmd], env))
        return ""


def test_online_uv_makes_the_venv_and_seeds_pip_from_the_release_index(tmp_path):
    r = FakeRunner()
    UvInstaller("/opt/uv", tmp_path / "uvcache").create_venv(r, sys.executable, tmp_path / "v", offline=False,
                                                              index_url="https://mirror.example/simple")
    [(argv, env)] = r.calls
    assert argv[:2] == ["/opt/uv", "venv"] and argv[-1] == str(tmp_path / "v")
    assert argv[argv.index("--python") + 1] == sys.executable
    assert argv[argv.index("--default-index") + 1] == "https://mirror.example/simple"
    assert argv[argv.index("--cache-dir") + 1] == str(tmp_path / "uvcache")
    assert "--seed" in argv and "--no-config" in argv and "--no-python-downloads" in argv
    assert argv[argv.index("--python-preference") + 1] == "only-system"
    assert env is None


def test_offline_uv_seeds_nothing_and_never_asks_the_index(tmp_path):
    r = FakeRunner()
    UvInstaller("/opt/uv", tmp_path / "uvcache").create_venv(r, sys.executable, tmp_path / "v", offline=True,
                                                              index_url="https://mirror.example/simple")
    [(argv, env)] = r.calls
    assert "--seed" not in argv and "--default-index" not in argv and "https://mirror.example/simple" not in argv
    assert env == {"UV_OFFLINE": "1"}


def test_a_bare_interpreter_name_is_resolved_on_path_first(tmp_path, monkeypatch):
    # uv would otherwise look the name up its own way (its managed interpreters included).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "python3.99"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    r = FakeRunner()
    UvInstaller("/opt/uv", tmp_path / "c").create_venv(r, "python3.99", tmp_path / "v", offline=True, index_url="x")
    argv = r.calls[0][0]
    assert argv[argv.index("--python") + 1] == str(fake)


def test_pip_makes_the_venv_with_the_interpreters_own_venv_module(tmp_path):
    r = FakeRunner()
    PipInstaller().create_venv(r, "/usr/bin/python3.11", tmp_path / "v", offline=True, index_url="x")
    assert r.calls == [(["/usr/bin/python3.11", "-m", "venv", str(tmp_path / "v")], None)]


@pytest.mark.slow
def test_uv_venv_offline_is_a_venv_of_that_interpreter(tmp_path):
    uv = find_uv() or shutil.which("uv")
    if uv is None:
        pytest.skip("no uv binary")
    venv = tmp_path / "v"
    runner = Runner("t", tmp_path / "log")
    UvInstaller(uv, tmp_path / "uvcache").create_venv(runner, sys.executable, venv, offline=True, index_url="x")
    out = subprocess.run([venv / "bin" / "python", "-c", "import sys; print(sys.prefix, sys.base_prefix)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert Path(out[0]) == venv and Path(out[1]) == Path(sys.base_prefix)
    assert venv_python_version(venv) == platform.python_version()  # what provenance records
    assert not list(venv.glob("lib/python*/site-packages/pip"))  # offline: nothing seeded
