"""Names are not paths: manifest entries, lock entries and attic names are plain wheel file names
of the wheelhouse, checked before any file operation (a manifest naming `../victim.whl` once made
`build --rebuild` move a file from outside the wheelhouse into it, and `verify`/`list` read it)."""

from __future__ import annotations

import json
import os

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.lock.closure import read_lock
from wheelfactory.store.wheelhouse import Wheelhouse, plain_wheel_name

from .conftest import invoke
from .test_verify import make_wheel, published

BAD_NAMES = ["../victim-1.0-py3-none-any.whl", "/etc/victim-1.0-py3-none-any.whl", "sub/demo-1.0-py3-none-any.whl",
             "demo-1.0-py3-none-any.whl\0", ".hidden-1.0-py3-none-any.whl", "victim.txt", "..", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_only_plain_wheel_names_pass(name):
    assert plain_wheel_name(name) is not None


def test_a_plain_wheel_name_passes():
    assert plain_wheel_name("torch-2.10.0+wf.abc-cp312-cp312-linux_aarch64.whl") is None


def _poison(wh: Wheelhouse, name: str, copy_of: str) -> None:
    data = json.loads(wh.manifest_path.read_text())
    data["wheels"][name] = data["wheels"][copy_of]
    wh.manifest_path.write_text(json.dumps(data))


def test_a_manifest_entry_outside_the_wheelhouse_is_corrupt_and_nothing_moves(tmp_path):
    wh, wheel = published(tmp_path)
    victim = tmp_path / "victim-1.0-py3-none-any.whl"
    victim.write_bytes(b"not yours")
    _poison(wh, "../victim-1.0-py3-none-any.whl", wheel.name)
    with pytest.raises(InputError, match=r"corrupt manifest: entry '\.\./victim-1\.0-py3-none-any\.whl' is not a "
                                         r"plain file name"):
        wh.manifest()
    with pytest.raises(InputError), wh.lock():  # a publish (a rebuild's attic move) reads the manifest first
        wh.publish([make_wheel(tmp_path / "new", "victim", "1.0")], {"component": "v", "key": "k9"})
    assert victim.read_bytes() == b"not yours" and not (wh.root / "attic").exists()


@pytest.mark.parametrize("command", [["verify"], ["list"]])
def test_verify_and_list_refuse_a_manifest_naming_an_outside_file(tmp_path, command):
    wh, wheel = published(tmp_path)
    secret = tmp_path / "secret-1.0-py3-none-any.whl"
    secret.write_text("CANARY-OUTSIDE")
    _poison(wh, "../secret-1.0-py3-none-any.whl", wheel.name)
    r = invoke("--wheelhouse", str(wh.root), *command)
    assert r.returncode == 2, r.stderr
    assert "entry '../secret-1.0-py3-none-any.whl'" in r.stderr
    assert "CANARY-OUTSIDE" not in r.stdout + r.stderr


def test_a_wheel_that_is_a_symlink_is_never_read_through(tmp_path):
    wh, wheel = published(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(wheel.read_bytes())
    wheel.unlink()
    os.symlink(outside, wheel)
    assert [m.actual for m in wh.mismatches("k1")] == ["symlink"]
    r = invoke("--wheelhouse", str(wh.root), "verify")
    assert r.returncode == 1
    assert f"{wheel.name}: a symbolic link, not a file of the wheelhouse (not followed)" in r.stderr


def test_a_symlinked_attic_is_refused(tmp_path):
    wh, wheel = published(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, wh.root / "attic")
    with pytest.raises(InputError, match="attic: not a directory of the wheelhouse"), wh.lock():
        wh.quarantine([wheel.name])
    assert wheel.exists() and not any(elsewhere.iterdir())


def test_a_lock_entry_outside_the_wheelhouse_is_corrupt(tmp_path):
    wh, wheel = published(tmp_path)
    wh.locks_dir.mkdir()
    pkg = {"name": "demo", "version": "1.0", "filename": "../../etc/passwd", "sha256": "0" * 64,
           "component": "demo", "origin": "built"}
    (wh.locks_dir / "r.json").write_text(json.dumps({"format": 1, "release": "r", "python": "3.12",
                                                     "platform": "linux_aarch64", "top_level": ["demo"],
                                                     "packages": [pkg]}))
    with pytest.raises(InputError, match=r"r\.json: corrupt lock: entry '\.\./\.\./etc/passwd'"):
        read_lock(wh, "r")
    r = invoke("--wheelhouse", str(wh.root), "verify")
    assert r.returncode == 1 and "locks/r.json: entry '../../etc/passwd' is not a plain file name" in r.stderr


def test_a_stray_file_named_like_no_wheel_is_still_moved_aside_by_recovery(tmp_path):
    wh, _ = published(tmp_path)
    (wh.root / "stray.whl").write_text("left by hand")
    with wh.lock():
        notes = wh.recover()
    assert (wh.root / "attic" / "stray.whl").read_text() == "left by hand" and len(notes) == 1
