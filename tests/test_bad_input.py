"""Bad input gets one clear message and exit code 2 (InputError), never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.test_executor import OK_BODY, setup
from wheelfactory.cli.app import main
from wheelfactory.core.errors import InputError
from wheelfactory.host.facts import check_jobs
from wheelfactory.lock.closure import read_lock
from wheelfactory.lock.venv import create_venv
from wheelfactory.planning.release import _read_toml
from wheelfactory.store.wheelhouse import Wheelhouse

FIX = "restore it or remove the wheelhouse to start over"


@pytest.mark.parametrize("body, message", [
    ("[]", 'not a wheelfactory manifest (expected an object with a "wheels" object)'),
    ('{"wheels": []}', 'not a wheelfactory manifest (expected an object with a "wheels" object)'),
    ('{"wheels": {"a.whl": {"dist": "a"}}}', "entry 'a.whl' lacks version, sha256, size"),
    ('{"wheels": {"a.whl": 3}}', "entry 'a.whl' lacks dist, version, sha256, size"),
])
def test_a_manifest_the_factory_did_not_write_is_refused(tmp_path, body, message):
    (tmp_path / "manifest.json").write_text(body)
    with pytest.raises(InputError) as e:
        Wheelhouse(tmp_path).manifest()
    assert str(e.value) == f"{tmp_path / 'manifest.json'}: {message}; {FIX}"
    assert e.value.exit_code == 2


def test_a_non_utf8_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"wheels": "\xff"}')
    with pytest.raises(InputError, match=r"manifest.json: corrupt manifest \('utf-8' codec can't decode"):
        Wheelhouse(tmp_path).manifest()


def test_a_wheelhouse_that_is_a_file(tmp_path):
    (tmp_path / "wh").write_text("")
    wh = Wheelhouse(tmp_path / "wh")
    msg = f"--wheelhouse {tmp_path / 'wh'} is a file, not a directory; pass a directory"
    with pytest.raises(InputError, match=f"^{msg}$"):
        wh.manifest()
    with pytest.raises(InputError, match=f"^{msg}$"), wh.lock():
        pass


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The CLI's entry point in this process (no subprocess): its exit code and stderr."""
    monkeypatch.setattr("sys.argv", ["wheelfactory", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def test_list_with_a_wheelhouse_that_is_a_file_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "wh").write_text("")
    code, err = run_main(monkeypatch, capsys, "--wheelhouse", str(tmp_path / "wh"), "list")
    assert (code, err) == (2, f"error: --wheelhouse {tmp_path / 'wh'} is a file, not a directory; "
                              "pass a directory\n")


def test_a_read_only_wheelhouse(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr("builtins.open", refuse)
    (tmp_path / "wh").mkdir()
    with pytest.raises(InputError) as e, Wheelhouse(tmp_path / "wh").lock():
        pass
    assert str(e.value) == (f"cannot write to the wheelhouse {tmp_path / 'wh'}: Read-only file system; "
                            "pass a --wheelhouse this user can write")


def test_a_non_utf8_release_file(tmp_path):
    (tmp_path / "r.toml").write_bytes(b"[target]\npython = '3.\xff'\n")
    with pytest.raises(InputError, match=r"r.toml: not UTF-8 text \(byte 21\); save it as UTF-8$"):
        _read_toml(tmp_path / "r.toml")


@pytest.mark.parametrize("body, message", [
    (b"{not json", "corrupt lock file (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    (b"[1]", "lock format None is not 1"),
    (b'{"format": 1}', "not a lock file wheelfactory wrote (KeyError: 'release')"),
])
def test_a_corrupt_lock_file(tmp_path, body, message):
    wh = Wheelhouse(tmp_path)
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "r.json").write_bytes(body)
    with pytest.raises(InputError) as e:
        read_lock(wh, "r")
    assert str(e.value) == f"{tmp_path / 'locks' / 'r.json'}: {message}; run `wheelfactory lock --release r` again"


def test_a_venv_path_that_is_a_file(tmp_path):
    (tmp_path / "v").write_text("")
    with pytest.raises(InputError, match=r"/v is a file, not a directory; pick a new path for the venv$"):
        create_venv(tmp_path / "v", "r", Wheelhouse(tmp_path / "wh"), {}, "python3", None)  # type: ignore[arg-type]


def test_jobs_are_bounded():
    check_jobs(None, cpus=2)
    check_jobs(8, cpus=2)
    with pytest.raises(InputError) as e:
        check_jobs(1000000, cpus=2)
    assert str(e.value) == ("--jobs 1000000: more than 4 x the 2 CPUs of this machine; use at most --jobs 8 "
                            "(or leave it out for a memory-aware default)")


def test_build_refuses_huge_jobs_before_anything(tmp_path, monkeypatch, capsys):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    code, err = run_main(monkeypatch, capsys, "--recipes-dir", str(f.recipes_dir), "--wheelhouse",
                         str(f.wheelhouse_dir), "build", "--release", "r", "--jobs", "1000000")
    assert code == 2 and err.startswith("error: --jobs 1000000: more than 4 x the ")
    assert not f.wheelhouse_dir.exists()


def test_manifest_entries_written_by_publish_pass_the_check(tmp_path):
    wh = Wheelhouse(tmp_path)
    wh._write_manifest({"a-1-py3-none-any.whl": {"dist": "a", "version": "1", "sha256": "0", "size": 1}})
    assert list(wh.manifest()) == ["a-1-py3-none-any.whl"]
    assert json.loads((tmp_path / "manifest.json").read_text())["format"] == 1
