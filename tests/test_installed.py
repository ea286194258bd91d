"""Adopting an installed distribution: repacked from RECORD with hashes checked (real venvs,
real wheels from PyPI: slow)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.pipeline.installed import probe, repack_installed
from wheelfactory.run.runner import Runner, clean_environ


def venv(path: Path, *pip_args: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    py = path / "bin" / "python"
    if pip_args:
        subprocess.run([py, "-m", "pip", "install", "-q", *pip_args], check=True,
                       env=clean_environ())
    return py


@pytest.fixture(scope="module")
def source_env(tmp_path_factory) -> Path:
    return venv(tmp_path_factory.mktemp("src") / "v", "requests==2.32.3", "idna==3.10")


@pytest.mark.slow
def test_repacked_wheels_install_the_same_files_elsewhere(source_env, tmp_path):
    runner = Runner("t", tmp_path / "log")
    wheels = repack_installed(str(source_env), "requests", tmp_path / "out", runner, with_requires=True)
    names = sorted(w.name.split("-")[0] for w in wheels)
    assert names == ["certifi", "charset_normalizer", "idna", "requests", "urllib3"]
    assert wheels[0].name == "requests-2.32.3-py3-none-any.whl"
    members = zipfile.ZipFile(wheels[0]).namelist()
    assert "requests/__init__.py" in members and "requests-2.32.3.dist-info/RECORD" in members
    assert not any("__pycache__" in m or m.endswith(("INSTALLER", "direct_url.json")) for m in members)
    # charset_normalizer ships a console script: it goes to .data/scripts, as installers expect
    cn = next(w for w in wheels if w.name.startswith("charset_normalizer"))
    assert any("/scripts/normalizer" in m for m in zipfile.ZipFile(cn).namelist())
    target = venv(tmp_path / "target")
    subprocess.run([target, "-m", "pip", "install", "-q", "--no-index", "--find-links", tmp_path / "out",
                    "requests"], check=True)
    out = subprocess.run([target, "-c", "import requests, idna; print(requests.__version__, idna.__version__)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2.32.3", "3.10"]
    assert (target.parent / "normalizer").exists()


@pytest.mark.slow
def test_a_changed_installed_file_is_refused(source_env, tmp_path):
    site = probe(str(source_env), "idna", Runner("t", tmp_path / "log")).dist_info.parent
    victim = site / "idna" / "package_data.py"
    original = victim.read_bytes()
    try:
        victim.write_bytes(original + b"# edited\n")
        with pytest.raises(BuildError, match="changed since installation: idna/package_data.py"):
            repack_installed(str(source_env), "idna", tmp_path / "out", Runner("t", tmp_path / "log"))
        assert list((tmp_path / "out").glob("*.whl")) == []
    finally:
        victim.write_bytes(original)


@pytest.mark.slow
def test_missing_and_editable_installs_are_refused(source_env, tmp_path):
    runner = Runner("t", tmp_path / "log")
    with pytest.raises(InputError, match="has no installed distribution 'torch'"):
        probe(str(source_env), "torch", runner)
    proj = tmp_path / "proj"
    (proj / "demo_pkg").mkdir(parents=True)
    (proj / "demo_pkg" / "__init__.py").write_text("")
    (proj / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=68"]\n'
                                         'build-backend = "setuptools.build_meta"\n'
                                         '[project]\nname = "demo-pkg"\nversion = "1.0"\n')
    subprocess.run([source_env, "-m", "pip", "install", "-q", "-e", proj], check=True,
                   env=clean_environ())
    with pytest.raises(InputError, match="demo-pkg in .* is an editable install"):
        probe(str(source_env), "demo-pkg", runner)


def test_requirements_follow_the_extras_asked_for(tmp_path):
    from wheelfactory.pipeline.installed import Installed, requirement_names
    inst = Installed("cuda-toolkit", "13.0.2", tmp_path / "cuda_toolkit-13.0.2.dist-info", "", "",
                     ('nvidia-cuda-runtime==13.0.96.*; extra == "cudart"',
                      'nvidia-cublas==13.1.0.3.*; extra == "cublas"',
                      'typing-extensions; python_version >= "3.8"'),
                     {}, {"python_version": "3.12", "sys_platform": "linux"})
    assert requirement_names(inst) == [("typing-extensions", frozenset())]
    assert requirement_names(inst, frozenset({"cudart"})) == [("nvidia-cuda-runtime", frozenset()),
                                                              ("typing-extensions", frozenset())]
