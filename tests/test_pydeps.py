"""Build requirements are keyed and isolated per index: one index's files are never offered to a
build against another (a `setuptools 999` a fake index served once poisoned every later build
under the honest key), each step installs only its own pinned files, and the index enters the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_executor import OK_BODY, setup
from wheelfactory.core.errors import BuildError
from wheelfactory.store.wheelmeta import sha256_file
from wheelfactory.toolchain.installer import download
from wheelfactory.toolchain.pydeps import index_identity, link_pinned, pydeps_dir, read_pins, record_pins

DEFAULT = "https://pypi.org/simple"
OTHER = "http://127.0.0.1:8080/simple"


class FakePip:
    """A runner whose `pip download` writes what the index serves into its -d directory."""

    def __init__(self, serves: dict[str, bytes]):
        self.serves = serves
        self.commands: list[list[str]] = []

    def run(self, cmd, **_kw):
        cmd = [str(c) for c in cmd]
        self.commands.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        for name, data in self.serves.items():
            (dest / name).write_bytes(data)

    def note(self, _text):
        pass


def test_the_index_identity_ignores_case_slash_and_credentials():
    assert index_identity("HTTPS://user:tok@PyPI.org/simple/?x=1#f") == DEFAULT
    assert pydeps_dir(Path("/c"), "https://pypi.org/simple/") == pydeps_dir(Path("/c"), DEFAULT)
    assert pydeps_dir(Path("/c"), OTHER) != pydeps_dir(Path("/c"), DEFAULT)
    assert pydeps_dir(Path("/c"), DEFAULT).parent == Path("/c/pydeps")


def test_the_index_enters_the_key_of_builds_only(tmp_path):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    default = f.plan(f.release("r"))
    f.index_url = OTHER
    other = f.plan(f.release("r"))
    f.index_url = "https://PYPI.org/simple/"
    same = f.plan(f.release("r"))
    assert default.steps[0].key_inputs["build_index"] == DEFAULT
    assert default.steps[0].key != other.steps[0].key and default.steps[0].key == same.steps[0].key


def test_a_poisoned_version_in_another_indexs_directory_is_never_offered(tmp_path):
    cache, wheelhouse = tmp_path / "cache", tmp_path / "wh"
    wheelhouse.mkdir()
    poisoned = pydeps_dir(cache, OTHER)
    poisoned.mkdir(parents=True)
    (poisoned / "setuptools-999.0-py3-none-any.whl").write_bytes(b"POISON")
    ours = pydeps_dir(cache, DEFAULT)
    into = tmp_path / "work" / "build-requirements"
    pip = FakePip({"setuptools-70.0.0-py3-none-any.whl": b"honest"})
    pins = download(pip, "python3", ["setuptools"], ours, wheelhouse=wheelhouse, index_url=DEFAULT,
                    local_names=[], into=into)
    assert sorted(p.name for p in into.iterdir()) == ["setuptools-70.0.0-py3-none-any.whl"]
    assert pins == {"setuptools-70.0.0-py3-none-any.whl": sha256_file(into / "setuptools-70.0.0-py3-none-any.whl")}
    assert str(poisoned) not in " ".join(pip.commands[0])  # pip was never shown the other index's files
    assert (ours / "setuptools-70.0.0-py3-none-any.whl").read_bytes() == b"honest"  # kept for offline builds
    assert not (ours / "setuptools-999.0-py3-none-any.whl").exists()


def test_an_offline_build_installs_only_its_pins_hash_checked(tmp_path):
    ours = pydeps_dir(tmp_path / "cache", DEFAULT)
    ours.mkdir(parents=True)
    (ours / "setuptools-70.0.0-py3-none-any.whl").write_bytes(b"honest")
    (ours / "setuptools-999.0-py3-none-any.whl").write_bytes(b"POISON")  # however it got there
    honest = "setuptools-70.0.0-py3-none-any.whl"
    record_pins(ours, ["setuptools", "/wh/torch-2.10.0-cp312-cp312-linux_aarch64.whl"],
                {honest: sha256_file(ours / honest)})
    pins = read_pins(ours, ["/elsewhere/torch-2.10.0-cp312-cp312-linux_aarch64.whl", "setuptools"])
    into = tmp_path / "br"
    link_pinned(ours, pins, into)
    assert [p.name for p in into.iterdir()] == ["setuptools-70.0.0-py3-none-any.whl"]
    (ours / "setuptools-70.0.0-py3-none-any.whl").unlink()
    (ours / "setuptools-70.0.0-py3-none-any.whl").write_bytes(b"swapped")
    with pytest.raises(BuildError, match="pinned as"):
        link_pinned(ours, pins, into)
    assert read_pins(ours, ["setuptools"]) is None  # other requirements: other pins
    assert [json.loads(p.read_text()) for p in (ours / "pins").iterdir()] == [pins]


def test_gc_removes_what_a_killed_download_left_an_hour_ago(tmp_path):
    import os
    import time

    from wheelfactory.pipeline.cachestore import CacheStore
    from wheelfactory.store.wheelhouse import Wheelhouse

    old, new = tmp_path / "cache" / "pydeps" / ".download-old", tmp_path / "cache" / "pydeps" / ".download-new"
    for d in (old, new):
        d.mkdir(parents=True)
        (d / "setuptools-70.0.0-py3-none-any.whl").write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    plan = CacheStore(tmp_path / "cache", Wheelhouse(tmp_path / "wh")).plan_gc(None, None)
    assert [(i.kind, i.path) for i in plan.remove] == [("temp", old)]


@pytest.mark.slow  # a real build: venv, pip download from the default index, uv/pip install
def test_a_real_build_against_the_default_index_never_installs_another_indexs_poison(tmp_path):
    import shutil

    from wheelfactory.store.wheelpack import pack_tree

    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    marker = tmp_path / "POISON-RAN"
    tree = tmp_path / "poison"
    (tree / "setuptools").mkdir(parents=True)
    (tree / "setuptools" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    for where in (pydeps_dir(f.cache_dir, OTHER), f.cache_dir / "pydeps"):  # another index's, and the old shared one
        where.mkdir(parents=True, exist_ok=True)
        pack_tree(tree, "setuptools", "999.0", "py3-none-any", where, summary="poison")
    plan = f.plan(f.release("r"))
    f.executor(plan, echo=lambda m: None, python=shutil.which("python3"), keep_work=True).build()
    site = next((f.cache_dir / "work").glob("a-*/venv/lib/python3*/site-packages"))
    assert sorted(p.name for p in site.glob("setuptools-*.dist-info")) != []
    assert list(site.glob("setuptools-999*")) == []  # the venv holds the index's setuptools, not the poison
    entry = next(iter(f.wheelhouse.manifest().values()))
    installed = sorted(entry["build_requirements"])
    assert any(n.startswith("setuptools-") for n in installed)
    assert not any(n.startswith("setuptools-999") for n in installed) and not marker.exists()
    assert entry["inputs"]["build_index"] == DEFAULT
