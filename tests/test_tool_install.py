"""A tool install is a first-class install: the programs the factory's own dependencies bring
(uv) are found through the installed package, never on PATH, where a pipx or `uv tool` install
puts only `wheelfactory`."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import uv

from wheelfactory.core.errors import InputError
from wheelfactory.lock import closure as lock
from wheelfactory.toolchain.installer import find_uv, require_uv

from .conftest import CI_RELEASES, REPO


def test_uv_is_the_uv_packages_binary_not_one_on_path(tmp_path, monkeypatch):
    decoy = tmp_path / "bin" / "uv"
    decoy.parent.mkdir()
    decoy.write_text("#!/bin/sh\nexit 99\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", str(decoy.parent))
    assert find_uv() == uv.find_uv_bin() != str(decoy)

    def missing() -> str:
        raise uv._find_uv.UvNotFound("not here")

    monkeypatch.setattr(uv, "find_uv_bin", missing)
    assert find_uv() is None  # not the decoy on PATH
    with pytest.raises(InputError, match="the uv package's binary is not installed beside this wheelfactory"):
        require_uv()


class _Recorder:
    """A Runner that records each command and writes the empty pylock `uv pip compile` would."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def run(self, cmd, **_kwargs) -> str:
        argv = [str(c) for c in cmd]
        self.argvs.append(argv)
        Path(argv[argv.index("-o") + 1]).write_text("packages = []\n")
        return ""


def test_lock_resolves_with_the_uv_packages_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    runner = _Recorder()
    (tmp_path / "requirements.in").write_text("")
    assert lock._uv_compile(runner, "python3.11", tmp_path, "final", ["--no-index"]) == []
    assert runner.argvs[0][:3] == [uv.find_uv_bin(), "pip", "compile"]


@pytest.mark.slow
def test_lock_and_venv_from_a_tool_install_with_only_the_console_script_on_path(tmp_path, ci_wheelhouse):
    """The installed console script of a fresh venv (what pipx and `uv tool install` make), run with a
    PATH holding only a directory with that script (and the target interpreter, which a user has)."""
    wheelhouse, cache = ci_wheelhouse
    tool = tmp_path / "tool"
    venv.create(tool, with_pip=False)
    # uv installs the checkout (not editable: the recipes travel as the package wheelfactory_recipes)
    subprocess.run([uv.find_uv_bin(), "pip", "install", "--quiet", "--python", tool / "bin" / "python",
                    "--no-config", REPO], check=True, timeout=600, env={**os.environ, "UV_NO_CONFIG": "1"})
    path = tmp_path / "path"
    path.mkdir()
    (path / "wheelfactory").symlink_to(tool / "bin" / "wheelfactory")
    python = Path(sys.executable).resolve()  # the target interpreter, given by path
    env = {"PATH": str(path), "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    if os.environ.get("WHEELFACTORY_UV_CACHE_DIR"):  # the module's uv cache, removed with it
        env["WHEELFACTORY_UV_CACHE_DIR"] = os.environ["WHEELFACTORY_UV_CACHE_DIR"]
    base = ["wheelfactory", "--wheelhouse", str(wheelhouse), "--cache-dir", str(cache)]
    r = subprocess.run([*base, "lock", "--offline", "--refresh", "--python", str(python), "-r",
                        str(CI_RELEASES / "ci.toml")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "locked" in r.stderr and "from the factory" in r.stderr
    r = subprocess.run([*base, "venv", str(tmp_path / "v"), "--python", str(python), "-r",
                        str(CI_RELEASES / "ci.toml")], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    assert "uv not found" not in r.stderr and "venv ready at" in r.stderr


# -- README command 1 on any machine: the CI release adopts torch from the index where the local CPU
#    wheel is absent ---------------------------------------------------------------------------------

def _ci_release_with_local_wheel_at(tmp_path: Path, wheel_dir: Path) -> Path:
    text = (CI_RELEASES / "ci.toml").read_text().replace("/opt/wheels/", f"{wheel_dir}/")
    text = text.replace('"../fixtures/nccl-standin"', f'"{CI_RELEASES.parent / "fixtures" / "nccl-standin"}"')
    assert str(wheel_dir) in text
    (tmp_path / "ci.toml").write_text(text)
    return tmp_path / "ci.toml"


def test_the_first_local_wheel_that_exists_else_the_requirement(factory, tmp_path):
    absent = _ci_release_with_local_wheel_at(tmp_path, tmp_path / "no-such-dir")
    assert factory.release(str(absent)).components["torch"].adopt == "torch==2.13.0"
    here = tmp_path / "wheels"
    here.mkdir()
    wheel = here / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    (tmp_path / "b").mkdir()
    present = _ci_release_with_local_wheel_at(tmp_path / "b", here)
    assert factory.release(str(present)).components["torch"].adopt == str(wheel)


def test_each_adopt_alternative_is_checked(factory, tmp_path):
    release = tmp_path / "r.toml"
    release.write_text((CI_RELEASES / "ci.toml").read_text().replace('"torch==2.13.0"]', '"torch==2.12.0"]')
                       .replace('"../fixtures/', f'"{CI_RELEASES.parent}/fixtures/'))
    with pytest.raises(InputError, match=r"\[components.torch\].adopt\[1\]: requirement 'torch==2.12.0' excludes"):
        factory.release(str(release))


@pytest.mark.slow
def test_command_1_adopts_torch_from_the_index_without_the_machine_image_wheel(tmp_path):
    """README command 1's torch step on a machine without /opt/wheels' CPU wheel (the release's path
    moved to a directory that does not exist): PyPI's torch 2.13.0 is adopted instead."""
    from .conftest import run_cli

    release = _ci_release_with_local_wheel_at(tmp_path, tmp_path / "opt-wheels-absent")
    common = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c")]
    r = run_cli(*common, "plan", "-r", str(release), "torch")
    assert r.returncode == 0 and "adopt torch==2.13.0" in r.stdout, r.stderr
    r = run_cli(*common, "build", "-r", str(release), "torch", "--no-host-check")
    assert r.returncode == 0, r.stderr
    assert [w.name for w in (tmp_path / "wh").glob("torch-*.whl")] == \
        ["torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"]
