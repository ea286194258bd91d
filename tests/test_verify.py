""""Cached" is verified: a wheel counts as cached only while it is the file the manifest recorded;
`wheelfactory verify` checks the whole wheelhouse."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from wheelfactory.pipeline.factory import Factory
from wheelfactory.store.wheelhouse import Wheelhouse
from wheelfactory.store.wheelpack import pack_tree

from .conftest import RECIPES, SPARK, invoke


def make_wheel(tmp: Path, dist: str, version: str, payload: str = "") -> Path:
    tree = tmp / f"tree-{dist}-{version}-{len(payload)}"
    (tree / dist).mkdir(parents=True)
    (tree / dist / "__init__.py").write_text(payload)
    return pack_tree(tree, dist, version, "py3-none-any", tmp / f"dist-{len(payload)}", summary="test wheel")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def published(tmp_path: Path) -> tuple[Wheelhouse, Path]:
    wh = Wheelhouse(tmp_path / "wh")
    w = make_wheel(tmp_path, "demo", "1.0")
    with wh.lock():
        wh.publish([w], {"component": "demo", "key": "k1", "origin": "built"})
    return wh, wh.root / w.name


# -- the wheelhouse's checks ---------------------------------------------------------------------

def test_publish_records_size_and_mtime(tmp_path):
    wh, wheel = published(tmp_path)
    entry = wh.manifest()[wheel.name]
    assert (entry["size"], entry["mtime_ns"]) == (wheel.stat().st_size, wheel.stat().st_mtime_ns)


def test_truncated_wheel_is_not_cached_and_reports_both_hashes(tmp_path):
    wh, wheel = published(tmp_path)
    recorded = sha(wheel)
    wheel.write_bytes(wheel.read_bytes()[:-10])
    assert not wh.is_cached("k1") and wh.files_for_key("k1") is None and "k1" not in wh.cached_keys()
    [m] = wh.mismatches("k1")
    assert m.describe() == f"{wheel.name}: sha256 {sha(wheel)}, the manifest recorded {recorded}"


def test_swapped_for_another_valid_wheel_of_the_same_name_is_not_cached(tmp_path):
    wh, wheel = published(tmp_path)
    other = make_wheel(tmp_path, "demo", "1.0", payload="print('another build')\n")
    assert other.name == wheel.name
    os.replace(other, wheel)
    assert not wh.is_cached("k1")


def test_same_size_and_mtime_is_trusted_unless_verifying(tmp_path):
    wh, wheel = published(tmp_path)
    flip_byte_keeping_size_and_mtime(wheel)
    assert wh.is_cached("k1")  # the fast path: size and mtime as published
    assert not wh.is_cached("k1", verify=True)
    assert [m.name for m in wh.mismatches("k1", full=True)] == [wheel.name]


def test_touched_but_identical_wheel_stays_cached(tmp_path):
    wh, wheel = published(tmp_path)
    os.utime(wheel, ns=(0, 0))  # a copy without -p: the full hash decides, and it matches
    assert wh.is_cached("k1")


def test_quarantine_moves_the_file_to_the_attic_and_drops_its_entry(tmp_path):
    wh, wheel = published(tmp_path)
    data = wheel.read_bytes()
    with wh.lock():
        moved = wh.quarantine([wheel.name])
    assert moved == [wh.root / "attic" / wheel.name] and moved[0].read_bytes() == data
    assert wheel.name not in wh.manifest() and not wheel.exists()
    assert not (wh.simple / "demo").exists()


# -- the executor rebuilds what changed ----------------------------------------------------------

@pytest.fixture
def adopting(tmp_path):
    """A release adopting a local wheel (no network, no compiler) and a function running its build."""
    source = make_wheel(tmp_path, "torch", "2.10.0")
    rel = tmp_path / "r.toml"
    rel.write_text(f'[target]\npython = "{sys.version_info.major}.{sys.version_info.minor}"\ncuda = "13.1.0"\n'
                   f'cuda_arch_list = ["12.1a"]\nplatform = "linux_aarch64"\n'
                   f'[components.torch]\nversion = "2.10.0"\nadopt = "{source}"\n')
    f = Factory(RECIPES, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: SPARK, system_cuda=True)

    def build(verify: bool = False) -> tuple[list, list[str]]:
        echoed: list[str] = []
        f.verify = verify
        plan = f.plan(f.release(str(rel)))
        return f.executor(plan, echoed.append).build(), echoed
    return f.wheelhouse, source, build


def test_a_corrupted_cached_wheel_is_moved_to_the_attic_and_rebuilt(adopting):
    wh, source, build = adopting
    build()
    wheel = wh.root / source.name
    good = sha(wheel)
    wheel.write_bytes(wheel.read_bytes()[:-1])
    bad = sha(wheel)
    results, echoed = build()
    assert [r.action for r in results] == ["adopt"]
    assert (f"[torch] {wheel.name}: sha256 {bad}, the manifest recorded {good}; moved to {wh.root / 'attic'}/, "
            "building it again") in echoed
    assert sha(wh.root / "attic" / wheel.name) == bad
    assert sha(wheel) == good and wh.manifest()[wheel.name]["sha256"] == good


def test_verify_option_catches_a_flip_the_fast_path_trusts(adopting):
    wh, source, build = adopting
    build()
    wheel = wh.root / source.name
    flip_byte_keeping_size_and_mtime(wheel)
    results, _ = build()
    assert [r.action for r in results] == ["cached"]
    results, echoed = build(verify=True)
    assert [r.action for r in results] == ["adopt"]
    assert any("the manifest recorded" in line for line in echoed)
    assert sha(wheel) == sha(source)


def test_build_help_documents_verify():
    r = invoke("build", "--help")
    assert r.returncode == 0 and "--verify" in r.stdout


# -- wheelfactory verify -------------------------------------------------------------------------

@pytest.fixture
def full_wheelhouse(tmp_path) -> Wheelhouse:
    """Two published wheels and a lock naming both."""
    wh = Wheelhouse(tmp_path / "wh")
    wheels = [make_wheel(tmp_path, "demo", "1.0"), make_wheel(tmp_path, "other", "2.0")]
    with wh.lock():
        wh.publish(wheels[:1], {"component": "demo", "key": "k1", "origin": "built"})
        wh.publish(wheels[1:], {"component": "other", "key": "k2", "origin": "built"})
    wh.locks_dir.mkdir()
    (wh.locks_dir / "r.txt").write_text("# lock\n" + "".join(f"{w.name.split('-')[0]}=={w.name.split('-')[1]} "
                                                             f"--hash=sha256:{sha(w)}\n" for w in wheels))
    (wh.locks_dir / "r.json").write_text(json.dumps({"packages": [{"filename": w.name, "sha256": sha(w)}
                                                                  for w in wheels]}))
    return wh


def verify(wh: Wheelhouse):
    return invoke("--wheelhouse", str(wh.root), "verify")


def test_verify_passes_a_clean_wheelhouse(full_wheelhouse):
    r = verify(full_wheelhouse)
    assert r.returncode == 0, r.stderr
    assert "2 wheel(s), manifest, index and locks consistent" in r.stderr


def test_verify_lists_every_injected_problem(full_wheelhouse, tmp_path):
    wh = full_wheelhouse
    demo, other = wh.root / "demo-1.0-py3-none-any.whl", wh.root / "other-2.0-py3-none-any.whl"
    demo_sha, other_sha = sha(demo), sha(other)
    flip_byte_keeping_size_and_mtime(demo)  # what the fast path cannot see, verify hashes in full
    other.unlink()
    stray = make_wheel(tmp_path, "stray", "0.1")
    os.replace(stray, wh.root / stray.name)
    page = wh.simple / "demo" / "index.html"
    page.write_text(page.read_text().replace(demo_sha, "0" * 64))
    with open(wh.locks_dir / "r.txt", "a") as f:
        f.write(f"ghost==1.0 --hash=sha256:{'1' * 64}\n")
    r = verify(wh)
    assert r.returncode == 1
    problems = [line.strip() for line in r.stderr.splitlines()[1:]]
    assert problems == [
        f"demo-1.0-py3-none-any.whl: sha256 {sha(demo)}, manifest.json recorded {demo_sha}",
        "other-2.0-py3-none-any.whl: in manifest.json, missing from the wheelhouse",
        "stray-0.1-py3-none-any.whl: in the wheelhouse, missing from manifest.json",
        f"simple/demo/index.html: demo-1.0-py3-none-any.whl with sha256 {'0' * 64}, manifest.json recorded {demo_sha}",
        f"locks/r.txt:2: demo==1.0 sha256 {demo_sha} matches no wheel in the wheelhouse",
        f"locks/r.txt:3: other==2.0 sha256 {other_sha} matches no wheel in the wheelhouse",
        f"locks/r.txt:4: ghost==1.0 sha256 {'1' * 64} matches no wheel in the wheelhouse",
        f"locks/r.json: demo-1.0-py3-none-any.whl locked with sha256 {demo_sha}, the file has {sha(demo)}",
    ]
    assert f"error: {wh.root}: 8 problem(s):" == r.stderr.splitlines()[0]


def test_verify_finds_an_index_missing_a_project(full_wheelhouse):
    (full_wheelhouse.simple / "other" / "index.html").unlink()
    r = verify(full_wheelhouse)
    assert r.returncode == 1 and "simple/other/index.html: missing" in r.stderr


def test_verify_of_a_missing_wheelhouse_is_bad_input(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path / "nowhere"), "verify")
    assert r.returncode == 2 and f"no wheelhouse at {tmp_path / 'nowhere'}" in r.stderr
    assert not (tmp_path / "nowhere").exists()
