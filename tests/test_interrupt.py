"""Dying cleanly: process groups killed with the factory, leftovers of a killed run, the publish
window, and locks between processes in the shared cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from wheelfactory.core.interrupt import deferred_signals, file_lock, pid_alive
from wheelfactory.pipeline.stepbuild import fresh_dir
from wheelfactory.run.runner import Runner
from wheelfactory.sources.fetch import SourceCache
from wheelfactory.sources.kinds import GitSource
from wheelfactory.store.wheelhouse import Wheelhouse

from .test_wheelhouse import make_wheel

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def sigint_raises():
    """Python turns SIGINT into KeyboardInterrupt only when SIGINT was not ignored at its start, and
    a shell starts background jobs (`cmd &` without job control) with SIGINT ignored: a suite
    started that way saw "DID NOT RAISE KeyboardInterrupt" here. These tests need Ctrl-C as a
    terminal delivers it, whatever started them."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _grandchild_script(pidfile: Path) -> list[str]:
    # A "make" that starts a long "nvcc" in the background and waits for it.
    return ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]


@pytest.mark.slow
def test_ctrl_c_kills_the_commands_whole_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    # Ctrl-C once the command's child is running (not after a fixed delay: a loaded machine may be
    # slower to start it)
    timer = threading.Thread(target=lambda: _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
                             and os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        Runner("x", tmp_path / "log").run(_grandchild_script(pidfile))
    grandchild = int(pidfile.read_text())
    assert _wait_for(lambda: not pid_alive(grandchild), 5), "the command's child outlived the interrupt"
    assert "stopped the command's process group" in (tmp_path / "log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_killed_factory_takes_its_commands_with_it(tmp_path, sig):
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from wheelfactory.core.interrupt import install_handlers
        from wheelfactory.run.runner import Runner
        install_handlers()
        Runner("x", Path({str(tmp_path / 'log')!r})).run({_grandchild_script(pidfile)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip()), "the command did not start"
    grandchild = int(pidfile.read_text())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode != 0 and "Interrupted" in err
    assert _wait_for(lambda: not pid_alive(grandchild), 5), f"{sig.name} left the command's child running"


def test_a_work_dir_left_by_a_killed_run_is_replaced(tmp_path):
    work = tmp_path / "work" / "nccl-0123456789ab"
    (work / "venv" / "bin").mkdir(parents=True)
    (work / "venv" / "bin" / "python").write_text("stale")
    dead = tmp_path / "work" / ".trash-999999999-1-nccl"  # moved aside by a process that is gone
    dead.mkdir()
    fresh_dir(work)
    assert work.is_dir() and list(work.iterdir()) == []
    assert not dead.exists()
    (work / "venv").mkdir()  # what the venv step does next: no FileExistsError


def test_a_wheel_left_outside_the_manifest_and_incoming_dirs_are_repaired_at_publish(tmp_path, capsys):
    wh = Wheelhouse(tmp_path / "wh")
    wh.root.mkdir()
    # What a SIGKILL in the publish window leaves: a temporary dir, and a wheel moved in unlisted.
    (wh.root / ".incoming-abc").mkdir()
    (wh.root / ".incoming-abc" / "half.whl").write_bytes(b"x")
    orphan = make_wheel(tmp_path, "orphan", "1.0")
    (wh.root / orphan.name).write_bytes(orphan.read_bytes())
    with wh.lock():
        wh.publish([make_wheel(tmp_path, "demo", "1.0")], {"component": "demo", "key": "k1", "origin": "built"})
    assert not list(wh.root.glob(".incoming-*"))
    assert not (wh.root / orphan.name).exists() and (wh.root / "attic" / orphan.name).exists()
    assert sorted(p.name for p in wh.root.glob("*.whl")) == sorted(wh.manifest())
    assert "not in its manifest" in capsys.readouterr().err


def test_deferred_signals_deliver_the_interrupt_at_the_end():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(1)
    assert done == [1]


def test_an_interrupt_in_the_publish_window_leaves_no_unlisted_wheel(tmp_path, monkeypatch):
    wh = Wheelhouse(tmp_path / "wh")
    real = Wheelhouse._write_manifest

    def interrupted_write(self, wheels):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the wheel moved in, before the manifest
        time.sleep(0.05)
        real(self, wheels)

    monkeypatch.setattr(Wheelhouse, "_write_manifest", interrupted_write)
    with pytest.raises(KeyboardInterrupt), wh.lock():
        wh.publish([make_wheel(tmp_path, "demo", "1.0")], {"component": "demo", "key": "k1", "origin": "built"})
    on_disk = sorted(p.name for p in wh.root.glob("*.whl"))
    assert on_disk and on_disk == sorted(json.loads(wh.manifest_path.read_text())["wheels"])
    assert (wh.simple / "demo" / "index.html").exists()


@pytest.mark.slow
def test_a_second_fetch_of_one_source_waits_and_reuses_the_tree(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "a.txt"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "a"], cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.strip()
    source = GitSource(str(repo), commit, submodules=False)
    cache = SourceCache(tmp_path / "c")
    tree = cache.tree_path(source, commit)
    got: list[Path] = []
    log = tmp_path / "fetch.log"
    with file_lock(cache.trees / f".{tree.name}.lock"):  # another process is fetching it
        t = threading.Thread(target=lambda: got.append(cache.fetch(source, Runner("s", log))))
        t.start()
        time.sleep(0.5)
        assert not got and not tree.exists(), "the second fetch did not wait for the first"
        assert "waiting for another process fetching" in log.read_text()
    t.join(10)
    assert got == [tree] and (tree / "a.txt").read_text() == "a\n"
    assert cache.fetch(source, Runner("s", log)) == tree  # a finished tree is reused, not fetched again
