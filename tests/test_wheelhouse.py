"""The wheelhouse: index, manifest, atomic publish, the lock between processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError, LockedError
from wheelfactory.store.wheelhouse import Wheelhouse
from wheelfactory.store.wheelpack import pack_tree


def make_wheel(tmp: Path, dist: str, version: str, payload: bytes = b"x", tag: str = "py3-none-any") -> Path:
    tree = tmp / f"tree-{dist}-{version}"
    pkg = tree / dist.replace("-", "_")
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_bytes(payload)
    return pack_tree(tree, dist, version, tag, tmp / "dist", summary="test wheel", requires=["six"],
                     extra_metadata={"Requires-Python": ">=3.8"})


def test_publish_writes_flat_dir_index_and_manifest(tmp_path):
    wh = Wheelhouse(tmp_path / "wh")
    w = make_wheel(tmp_path, "demo-pkg", "1.0+wf.abc")
    with wh.lock():
        wh.publish([w], {"component": "demo", "key": "k1", "origin": "built"})
    assert (wh.root / w.name).is_file()
    entry = wh.manifest()[w.name]
    assert entry["component"] == "demo" and entry["key"] == "k1" and entry["size"] == w.stat().st_size
    assert entry["dist"] == "demo-pkg" and entry["version"] == "1.0+wf.abc"
    page = (wh.root / "simple" / "demo-pkg" / "index.html").read_text()
    assert f'href="../../{w.name}#sha256={entry["sha256"]}"' in page
    assert 'data-requires-python="&gt;=3.8"' in page
    assert '<a href="demo-pkg/">' in (wh.root / "simple" / "index.html").read_text()
    assert wh.is_cached("k1") and not wh.is_cached("k2")


@pytest.mark.slow  # runs pip
def test_pip_installs_from_the_simple_index(tmp_path):
    import subprocess
    import sys

    wh = Wheelhouse(tmp_path / "wh")
    w = make_wheel(tmp_path, "demo-pkg", "1.0")
    with wh.lock():
        wh.publish([w], {"component": "demo", "key": "k1", "origin": "built"})
    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--isolated", "--target", target,
                    "--index-url", (wh.root / "simple").as_uri(), "demo-pkg==1.0"], check=True)
    assert (target / "demo_pkg" / "__init__.py").exists()


def test_a_bad_wheel_publishes_nothing(tmp_path):
    wh = Wheelhouse(tmp_path / "wh")
    good = make_wheel(tmp_path, "good", "1.0")
    with wh.lock():
        wh.publish([good], {"component": "good", "key": "k0", "origin": "built"})
    before = sorted(p.name for p in wh.root.iterdir()), wh.manifest_path.read_text()
    other = make_wheel(tmp_path, "other", "1.0")
    broken = tmp_path / "dist" / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(other.read_bytes()[:200])  # truncated archive
    with wh.lock(), pytest.raises(BuildError, match="not a valid zip"):
        wh.publish([other, broken], {"component": "x", "key": "k1", "origin": "built"})
    assert (sorted(p.name for p in wh.root.iterdir()), wh.manifest_path.read_text()) == before


def test_a_wheel_whose_metadata_lies_is_refused(tmp_path):
    w = make_wheel(tmp_path, "demo", "1.0")
    liar = tmp_path / "dist" / "demo-2.0-py3-none-any.whl"
    liar.write_bytes(w.read_bytes())
    wh = Wheelhouse(tmp_path / "wh")
    with wh.lock(), pytest.raises(BuildError, match="METADATA says"):
        wh.publish([liar], {"component": "demo", "key": "k", "origin": "built"})
    assert not wh.manifest_path.exists()


def test_a_newer_build_moves_the_old_one_to_the_attic(tmp_path):
    wh = Wheelhouse(tmp_path / "wh")
    a = make_wheel(tmp_path, "nccl-like", "2.29.2+wf.aaaa", b"a")
    b = make_wheel(tmp_path, "nccl-like", "2.29.2+wf.bbbb", b"b")
    with wh.lock():
        wh.publish([a], {"component": "c", "key": "ka", "origin": "built"})
        wh.publish([b], {"component": "c", "key": "kb", "origin": "built"})
    assert list(wh.manifest()) == [b.name]
    assert (wh.root / "attic" / a.name).exists()
    assert a.name not in (wh.root / "simple" / "nccl-like" / "index.html").read_text()


def _hold_lock(root: str, seconds: float, started) -> None:
    with Wheelhouse(Path(root)).lock():
        started.set()
        time.sleep(seconds)


@pytest.mark.slow  # starts a second process
def test_a_second_process_waits_for_the_lock(tmp_path):
    started = multiprocessing.Event()
    proc = multiprocessing.Process(target=_hold_lock, args=(str(tmp_path / "wh"), 3.0, started))
    proc.start()
    assert started.wait(10)
    waited = []
    with pytest.raises(LockedError, match=r"held by pid \d+ .* since .*gave up after 0s") as e:
        with Wheelhouse(tmp_path / "wh").lock(timeout=0.5, on_wait=waited.append):
            pass
    assert e.value.exit_code == 3
    assert len(waited) == 1 and waited[0].startswith(f"pid {proc.pid} (")  # who holds it, told once
    with Wheelhouse(tmp_path / "wh").lock(timeout=30):
        pass  # granted once the holder is done
    proc.join()


def test_a_rebuild_under_the_same_file_name_keeps_the_old_bytes(tmp_path):
    wh = Wheelhouse(tmp_path / "wh")
    a = make_wheel(tmp_path / "a", "pure", "1.0", b"old")
    b = make_wheel(tmp_path / "b", "pure", "1.0", b"new")
    assert a.name == b.name
    with wh.lock():
        wh.publish([a], {"component": "c", "key": "k-old", "origin": "built"})
        wh.publish([b], {"component": "c", "key": "k-new", "origin": "built"})
    assert wh.manifest()[b.name]["key"] == "k-new"
    assert (wh.root / "attic" / a.name).read_bytes() == a.read_bytes()


def _index_links(wh: Wheelhouse, project: str) -> str:
    return (wh.simple / project / "index.html").read_text()


def test_an_index_older_than_the_manifest_is_written_again(tmp_path):
    """A SIGKILL after the manifest was written and before the new simple/ was swapped in."""
    wh = Wheelhouse(tmp_path / "wh")
    a = make_wheel(tmp_path / "a", "pure", "1.0", b"a")
    b = make_wheel(tmp_path / "b", "other", "2.0", b"b")
    with wh.lock():
        wh.publish([a], {"component": "c", "key": "k1", "origin": "built"})
        stale = {p.relative_to(wh.simple): p.read_bytes() for p in wh.simple.rglob("*") if p.is_file()}
        wh.publish([b], {"component": "d", "key": "k2", "origin": "built"})
    # put the old index back, as if the new one never got in
    for rel, data in stale.items():
        (wh.simple / rel).write_bytes(data)
    assert "other" not in (wh.simple / "index.html").read_text()
    assert wh.recover_if_idle(lambda line: None) == [
        "simple/ did not match manifest.json (an interrupted publish); index written again"]
    assert b.name in _index_links(wh, "other") and a.name in _index_links(wh, "pure")
    assert wh.recover_if_idle(lambda line: None) == []  # once repaired, nothing more to say


def test_a_missing_index_is_written_again_from_the_manifest(tmp_path):
    """A SIGKILL between moving simple/ aside and moving the new one in."""
    import os

    wh = Wheelhouse(tmp_path / "wh")
    a = make_wheel(tmp_path / "a", "pure", "1.0", b"a")
    with wh.lock():
        wh.publish([a], {"component": "c", "key": "k1", "origin": "built"})
    os.replace(wh.simple, wh.root / ".simple-old-4242")
    assert wh.recover_if_idle(lambda line: None)[-1].startswith("simple/ did not match manifest.json")
    assert a.name in _index_links(wh, "pure")
    assert not list(wh.root.glob(".simple-*"))


def test_the_attic_never_overwrites_a_copy_moved_in_the_same_second(tmp_path):
    """Three builds of one file name quarantined back to back: every copy stays in the attic."""
    wh = Wheelhouse(tmp_path / "wh")
    payloads = [b"first", b"second", b"third", b"fourth"]
    wheels = [make_wheel(tmp_path / str(i), "pure", "1.0", p) for i, p in enumerate(payloads)]
    with wh.lock():
        for i, wheel in enumerate(wheels):
            wh.publish([wheel], {"component": "c", "key": f"k{i}", "origin": "built"})
    kept = sorted(p.read_bytes() for p in (wh.root / "attic").iterdir())
    assert kept == sorted(w.read_bytes() for w in wheels[:3])
    assert (wh.root / wheels[3].name).read_bytes() == wheels[3].read_bytes()


def test_a_rebuild_with_the_same_bytes_adds_nothing_to_the_attic(tmp_path):
    wh = Wheelhouse(tmp_path / "wh")
    a = make_wheel(tmp_path, "pure", "1.0", b"same")
    with wh.lock():
        wh.publish([a], {"component": "c", "key": "k1", "origin": "built"})
        wh.publish([a], {"component": "c", "key": "k2", "origin": "built"})  # another key, byte-identical
        wh.quarantine([a.name], same_as={wh.manifest()[a.name]["sha256"]})  # a --rebuild about to publish it
    assert not (wh.root / "attic").exists()


def test_the_attic_keeps_one_copy_of_the_same_bytes(tmp_path):
    wh = Wheelhouse(tmp_path / "wh")
    old, new = make_wheel(tmp_path / "o", "pure", "1.0", b"old"), make_wheel(tmp_path / "n", "pure", "1.0", b"new")
    with wh.lock():
        for i in range(3):  # old, new, old, new, ...: each replaced old build is the same bytes
            wh.publish([old], {"component": "c", "key": f"old{i}", "origin": "built"})
            wh.publish([new], {"component": "c", "key": f"new{i}", "origin": "built"})
    kept = [p.read_bytes() for p in (wh.root / "attic").iterdir()]
    assert sorted(kept) == sorted([old.read_bytes(), new.read_bytes()])  # one copy of each, not five


def test_the_attic_never_replaces_a_link_that_points_nowhere(tmp_path):
    """attic/NAME taken by a dangling link (a symlinked wheel moved there earlier): the next copy of
    NAME goes beside it, the link stays."""
    wh = Wheelhouse(tmp_path / "wh")
    a = make_wheel(tmp_path / "a", "pure", "1.0", b"old")
    b = make_wheel(tmp_path / "b", "pure", "1.0", b"new")
    (wh.root / "attic").mkdir(parents=True)
    (wh.root / "attic" / a.name).symlink_to(tmp_path / "gone.whl")
    with wh.lock():
        wh.publish([a], {"component": "c", "key": "k-old", "origin": "built"})
        wh.publish([b], {"component": "c", "key": "k-new", "origin": "built"})
    assert (wh.root / "attic" / a.name).readlink() == tmp_path / "gone.whl"
    assert [p.read_bytes() for p in (wh.root / "attic").glob(f"*-{a.name}")] == [a.read_bytes()]
