"""Bad input is refused before Docker runs, naming what is missing and the command that makes it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from assemble.cli import images
from wheelfactory.core.errors import InputError
from wheelfactory.pipeline.factory import Factory

from .conftest import RECIPES, SPARK

RELEASE = """
[target]
python = "3.11"
cuda = "13.0"
cuda_arch_list = ["12.1a"]
platform = "linux_x86_64"

[image]
kind = "vllm"
repository = "test/vllm"
base = "local/debian-py:bookworm"
tag = "0.0.1-t4"

[pins]
transformers = "4.57.6"
"""


def wheel(root: Path, filename: str) -> dict[str, object]:
    """A tiny real wheel file and its lock entry."""
    name, version = filename.split("-")[:2]
    with zipfile.ZipFile(root / filename, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
    return {"name": name.replace("_", "-"), "version": version, "filename": filename, "sha256": "0" * 64,
            "component": None, "origin": "pypi"}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Factory, Path, Path]:
    """A release, a wheelhouse with a lock for it, and a docker stand-in that records any call."""
    release = tmp_path / "tiny.toml"
    release.write_text(RELEASE)
    wh = tmp_path / "wheelhouse"
    (wh / "locks").mkdir(parents=True)
    marker = tmp_path / "docker-ran"
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 1\n")
    docker.chmod(0o755)
    return Factory(RECIPES, wh, tmp_path / "cache", host_probe=lambda: SPARK), release, docker


def write_lock(wh: Path, files: list[str]) -> None:
    packages = [wheel(wh, f) for f in files]
    lock = {"format": 1, "release": "tiny", "python": "3.11", "platform": "linux_x86_64",
            "top_level": ["transformers"], "packages": packages}
    (wh / "locks" / "tiny.json").write_text(json.dumps(lock))


def refused(factory: Factory, docker: Path, *args: str) -> str:
    result = CliRunner().invoke(images, [*args, "--docker", str(docker), "--output-dir",
                                         str(factory.wheelhouse_dir.parent / "out")], obj=factory)
    assert isinstance(result.exception, InputError), result.output
    assert not (docker.parent / "docker-ran").exists(), "docker ran on bad input"
    return str(result.exception)


def test_not_locked(setup) -> None:
    factory, release, docker = setup
    msg = refused(factory, docker, "--release", str(release))
    assert "release 'tiny' is not locked" in msg and "wheelfactory lock --release tiny" in msg


def test_locked_wheel_missing_from_wheelhouse(setup) -> None:
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.6-py3-none-any.whl"])
    (factory.wheelhouse_dir / "transformers-4.57.6-py3-none-any.whl").unlink()
    msg = refused(factory, docker, "--release", str(release))
    assert "transformers-4.57.6-py3-none-any.whl" in msg and "wheelfactory lock --release tiny" in msg


def test_lock_older_than_release(setup) -> None:
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.5-py3-none-any.whl"])
    msg = refused(factory, docker, "--release", str(release))
    assert "has transformers 4.57.5, the release pins 4.57.6" in msg and "wheelfactory lock --release tiny" in msg


def test_wheel_for_the_wrong_python(setup) -> None:
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.6-py3-none-any.whl",
                                        "numpy-2.3.5-cp312-cp312-manylinux_2_27_x86_64.whl"])
    msg = refused(factory, docker, "--release", str(release))
    assert "numpy-2.3.5-cp312-cp312-manylinux_2_27_x86_64.whl" in msg and "python 3.11" in msg
    assert "do not install on base local/debian-py:bookworm" in msg


def test_wheel_for_the_wrong_platform(setup) -> None:
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.6-py3-none-any.whl",
                                        "numpy-2.3.5-cp311-cp311-manylinux_2_27_aarch64.whl"])
    msg = refused(factory, docker, "--release", str(release))
    assert "numpy-2.3.5-cp311-cp311-manylinux_2_27_aarch64.whl" in msg and "linux_x86_64" in msg


def test_unknown_base(setup) -> None:
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.6-py3-none-any.whl"])
    msg = refused(factory, docker, "--release", str(release), "--base-image", "example/unknown:1")
    assert "unknown base image 'example/unknown:1'" in msg and "assemble/data/bases.toml" in msg


def test_all_skips_unlocked_releases_naming_the_command(setup) -> None:
    factory, _, docker = setup
    result = CliRunner().invoke(images, ["--all", "--docker", str(docker)], obj=factory)
    assert isinstance(result.exception, InputError)
    assert "skipping 0.15.0-t4: not locked" in result.output
    assert "wheelfactory lock --release 0.15.0-t4" in result.output
    assert not (docker.parent / "docker-ran").exists()


def test_good_input_writes_files_without_docker(setup) -> None:
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.6-py3-none-any.whl", "idna-3.20-py3-none-any.whl"])
    out = factory.wheelhouse_dir.parent / "out"
    result = CliRunner().invoke(images, ["--release", str(release), "--no-build", "--output-dir", str(out),
                                         "--docker", str(docker)], obj=factory)
    assert result.exit_code == 0, result.output
    layers = out / "tiny" / "context" / "layers"
    assert (layers / "transformers" / "requirements.txt").read_text() == \
        f"transformers==4.57.6 --hash=sha256:{'0' * 64}\n"
    assert (layers / "stack" / "idna-3.20-py3-none-any.whl").is_file()
    assert (out / "tiny" / "runtime.Dockerfile").is_file() and (out / "tiny" / "docker-bake.hcl").is_file()
    assert not (docker.parent / "docker-ran").exists()


def test_a_build_key_that_is_not_hex_never_reaches_the_bake_file(setup) -> None:
    factory, release, docker = setup
    wh = factory.wheelhouse_dir
    write_lock(wh, ["transformers-4.57.6-py3-none-any.whl"])
    lock_file = wh / "locks" / "tiny.json"
    lock = json.loads(lock_file.read_text())
    lock["packages"][0]["component"] = "vllm"
    lock_file.write_text(json.dumps(lock))
    entry = {"dist": "transformers", "version": "4.57.6", "sha256": "0" * 64, "size": 1,
             "key": '${REGISTRY}"\n  dockerfile = "/etc/x'}
    (wh / "manifest.json").write_text(json.dumps({"wheels": {"transformers-4.57.6-py3-none-any.whl": entry}}))
    message = refused(factory, docker, "--release", str(release), "--no-build")
    assert "the build key of transformers-4.57.6-py3-none-any.whl is not 64 hex digits" in message
    assert not (wh.parent / "out" / "tiny" / "docker-bake.hcl").exists()
