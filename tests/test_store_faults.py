"""Tracebacks and wrong acceptances of the store and process side, each a clean message now:
--wait nan, a --cache-dir or --wheelhouse that is a file, a recipe module that does not import,
a zip whose symlink entry has a file under it, `inspect` of a zip that is no wheel, options on an
adopted component, a bad adopted wheel found only after its dependencies were built, leftovers of
an interrupted publish, a changed wheel `lock` called missing, a --source-dir that is a file."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from tests.test_executor import OK_BODY, setup
from tests.test_recipe_contract import release_file
from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.lock.closure import component_wheels
from wheelfactory.sources.fetch import extract_archive

from .conftest import RECIPES, invoke
from .test_verify import flip_byte_keeping_size_and_mtime, published


@pytest.mark.parametrize("value, says", [("nan", "nan is not a number of seconds"),
                                         ("inf", "inf is not a number of seconds"),
                                         ("-1", "-1.0 is not in the range x>=0")])
def test_wait_must_be_a_finite_number_of_seconds(tmp_path, value, says):
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "build", "--wait", value)
    assert r.returncode == 2 and says in r.stderr


def test_a_cache_dir_that_is_a_file_is_bad_input(tmp_path):
    (tmp_path / "file").write_text("")
    for command in (["plan"], ["cache", "list"], ["cache", "gc", "--dry-run"]):
        # before the command and after it (a global option is accepted on either side)
        option = ["--cache-dir", str(tmp_path / "file")]
        for args in ([*option, *command], [*command, *option]):
            r = invoke(*args)
            assert r.returncode == 2, (args, r.stderr)
            assert r.stderr == f"error: --cache-dir {tmp_path / 'file'} is a file, not a directory; pass a directory\n"


def test_a_recipes_dir_that_is_a_file_is_named_as_a_file_not_as_missing(tmp_path):
    (tmp_path / "file").write_text("")
    option = ["--recipes-dir", str(tmp_path / "file")]
    for args in ([*option, "plan"], ["plan", *option]):
        r = invoke("--cache-dir", str(tmp_path / "c"), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr == (f"error: recipes directory {str(tmp_path / 'file')!r} is a file, not a directory "
                            "(set --recipes-dir to a directory of recipe modules)\n")
    r = invoke("--cache-dir", str(tmp_path / "c"), "--recipes-dir", str(tmp_path / "absent"), "plan")
    assert r.returncode == 2 and "does not exist (set --recipes-dir)" in r.stderr


@pytest.mark.parametrize("command", [["cache", "list"], ["cache", "gc", "--dry-run", "--keep-sources"]])
def test_cache_commands_on_a_wheelhouse_that_is_a_file_are_bad_input(tmp_path, command):
    (tmp_path / "file").write_text("")
    r = invoke("--wheelhouse", str(tmp_path / "file"), "--cache-dir", str(tmp_path / "c"), *command)
    assert r.returncode == 2
    assert f"--wheelhouse {tmp_path / 'file'} is a file, not a directory" in r.stderr


@pytest.mark.parametrize("body, says", [
    ("def broken(:\n", ":1: not valid Python (invalid syntax)"),
    ("raise RuntimeError('no GPU here')\n", ": the recipe module raised RuntimeError on import (no GPU here)"),
    ("import a_module_that_is_not_there\n", ": the recipe module raised ModuleNotFoundError on import"),
])
def test_a_recipe_module_that_does_not_import_is_bad_input_naming_it(tmp_path, body, says):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.py").write_text(body)
    r = invoke("--recipes-dir", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "c"), "list")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {tmp_path / 'recipes' / 'mine.py'}{says}")


def test_a_zip_whose_symlink_entry_has_a_file_under_it_is_refused(tmp_path):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("pkg/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "target")
        zf.writestr("pkg/link/file", "under the link")
    with pytest.raises(BuildError, match=r"src\.zip: refusing to extract: "):
        extract_archive(archive, tmp_path / "out")


def test_inspect_of_a_zip_without_dist_info_is_not_a_wheel(tmp_path):
    fake = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("demo/__init__.py", "")
    r = invoke("inspect", str(fake))
    assert r.returncode == 2
    assert r.stderr == f"error: {fake}: not a wheel: no NAME-VERSION.dist-info/METADATA in it\n"


def test_options_on_an_adopted_component_are_refused(tmp_path):
    from wheelfactory.pipeline.factory import Factory

    from .conftest import SPARK

    f = Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK)
    p = release_file(tmp_path, '[components.flashinfer]\nversion = "0.6.2"\nadopt = "flashinfer-python==0.6.2"\n'
                               'options = { cubin = true }\n')
    with pytest.raises(InputError, match=r"\[components\.flashinfer\]: options cubin apply to a build, and "
                                         r"flashinfer is adopted \(flashinfer-python==0\.6\.2\)"):
        f.plan(f.release(str(p)), ["flashinfer"])
    same = release_file(tmp_path, '[components.flashinfer]\nversion = "0.6.2"\nadopt = "flashinfer-python==0.6.2"\n'
                                  'options = { cubin = false }\n')  # the default: it steers nothing
    assert f.plan(f.release(str(same)), ["flashinfer"]).step("flashinfer").action == "adopt"


def test_a_bad_adopted_wheel_is_reported_before_any_dependency_is_built(tmp_path, monkeypatch):
    from wheelfactory.pipeline.executor import Executor

    f, _ = setup(tmp_path, {"a": (OK_BODY, ()), "b": (OK_BODY, ("a",))})
    bad = tmp_path / "b-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    plan = f.plan(f.release("r"), adopt=[f"b={bad}"])
    ran: list[str] = []
    monkeypatch.setattr(Executor, "_step", lambda self, i, step: ran.append(step.component))
    with pytest.raises(InputError, match=r"^\[b\] adopted wheel: .*; nothing was built$"):
        f.executor(plan, echo=lambda m: None, python="python3").build()
    assert ran == []
    wrong = tmp_path / "other-1.0-py3-none-any.whl"
    wrong.write_bytes(b"")
    with pytest.raises(InputError, match=r"is a wheel of 'other'"):
        f.plan(f.release("r"), adopt=[f"b={wrong}"])


def test_verify_reports_what_an_interrupted_publish_left(tmp_path):
    wh, _ = published(tmp_path)
    (wh.root / ".incoming-abc123").mkdir()
    r = invoke("--wheelhouse", str(wh.root), "verify")
    assert r.returncode == 1
    assert ".incoming-abc123/: left by an interrupted publish or download (the next build or lock removes it)" \
        in r.stderr
    with wh.lock():
        wh.recover()
    assert invoke("--wheelhouse", str(wh.root), "verify").returncode == 0


def test_lock_names_a_changed_wheel_instead_of_calling_it_missing(tmp_path):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"))
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    from wheelfactory.store.wheelpack import pack_tree
    wheel = pack_tree(tree, "a", "1.0", "py3-none-any", tmp_path / "dist", summary="t")
    with f.wheelhouse.lock():
        f.wheelhouse.publish([wheel], {"component": "a", "key": plan.steps[0].key})
    flip_byte_keeping_size_and_mtime(f.wheelhouse.root / wheel.name)
    Path(f.wheelhouse.root / wheel.name).touch()  # the fast path then hashes it in full
    with pytest.raises(InputError, match=r"is in the wheelhouse, but a-1\.0-py3-none-any\.whl: sha256 "):
        component_wheels(plan, f.wheelhouse)


def test_a_source_dir_that_is_a_file_says_so(tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0")
    r = invoke("--cache-dir", str(tmp_path / "c"), "plan", "--source-dir", f"nccl={tmp_path / 'passwd'}", "nccl")
    assert r.returncode == 2
    assert f"{tmp_path / 'passwd'}' is a file, not a directory" in r.stderr


def test_a_full_disk_outside_any_step_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    import errno

    from wheelfactory.store.wheelhouse import Wheelhouse

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.root / "manifest.json"))
    monkeypatch.setattr(Wheelhouse, "manifest", full)
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "list")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.endswith(f"error: no space left on the device writing {tmp_path / 'wh' / 'manifest.json'}; "
                             "free some space and run again\n")
