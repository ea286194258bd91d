"""Dying cleanly: signals, the commands' process groups, critical sections, and locks between
processes that say who holds them.

Every command the Runner starts runs in its own session (its own process group), so a terminal's
Ctrl-C, a `kill PID` or a closed terminal reaches the factory only, never make/nvcc/pip directly.
The factory then turns SIGINT, SIGTERM and SIGHUP into an exception (`Interrupted`, a
KeyboardInterrupt), and the Runner kills the running command's whole group on its way out. So when
the factory stops, its children stop with it, and the CLI's "interrupted" message is true.

SIGKILL (an OOM kill, `kill -9`) cannot be caught. Two things keep its commands from running on:
each command is started with a parent-death signal (Linux prctl), so its leader gets SIGTERM when
the factory dies (make and ninja pass it on to what they started); and the Runner writes each
running command's process group into the work tree (`.wf-groups`), so the next run of that step
stops whatever of the group is still alive (a member that ignored SIGTERM, a compiler whose make
was killed) before it moves the dead run's work tree aside. A per-key lock keeps two builds out of
one work directory, and the wheelhouse repairs an interrupted publish under its lock (see
Wheelhouse.recover).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .secretenv import shown_command

# The signals that mean "stop now" from a terminal, a service manager or a closed session.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so the same cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def install_handlers() -> None:
    """SIGTERM and SIGHUP raise Interrupted (SIGINT already raises KeyboardInterrupt); main thread only."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends (a step that must not be cut in half, such as
    moving a wheel in and writing the manifest that lists it); the first one held is delivered at
    the end. Python runs signal handlers in the main thread only: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda s, _f: pending.append(s)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            os.kill(os.getpid(), pending[0])  # now handled as usual (an exception, or the default action)


def kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a command started with start_new_session=True and everything it started: SIGTERM to its
    group, SIGKILL to what is left after `grace` seconds, and reap the leader."""
    with deferred_signals():  # a second Ctrl-C must not cut the cleanup short and leave orphans
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break  # the whole group is gone
            if _group_ends(proc, grace):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)


def _group_ends(proc: subprocess.Popen, within: float) -> bool:
    """Whether the process group led by proc is gone within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        proc.poll()  # reap the leader, or its zombie keeps the group "alive"
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec function: the child gets SIGTERM when `parent` (the factory) dies, even by SIGKILL.
    Linux only; elsewhere (or if prctl fails) it does nothing and the next run's cleanup remains."""
    def preexec() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the factory died between fork and prctl
            os._exit(128 + signal.SIGTERM)
    return preexec


def _group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (from /proc; empty where there is none)."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _belongs(pid: int, marker: str) -> bool:
    """Whether a process works in the tree `marker` names: its directory, command line or
    environment mentions it (a process group number can be reused by an unrelated process once
    the group is gone; such a process is left alone)."""
    try:
        if os.readlink(f"/proc/{pid}/cwd").startswith(marker):
            return True
        return any(marker.encode() in Path(f"/proc/{pid}/{part}").read_bytes() for part in ("cmdline", "environ"))
    except OSError:
        return False


def stop_leftover_groups(groups_file: Path, marker: str, grace: float = 3.0) -> list[int]:
    """Stop the process groups a dead run recorded in `groups_file` that still have a member
    working in `marker` (the work tree): SIGTERM, then SIGKILL after `grace`. Returns the groups
    stopped; the file is removed."""
    try:
        recorded = {int(line) for line in groups_file.read_text().split() if line.isdigit()}
    except OSError:
        return []
    stopped = []
    for pgid in sorted(recorded):
        members = _group_members(pgid)
        if not members or not any(_belongs(p, marker) for p in members):
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + grace
            while _group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _group_members(pgid):
                break
        stopped.append(pgid)
    groups_file.unlink(missing_ok=True)
    return stopped


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# While waiting for a lock: how often to poll it, and how often to say again who holds it.
LOCK_POLL_S = 0.5
LOCK_REMIND_S = 60.0


def lock_holder(f: IO[str]) -> str:
    """The holder line a lock file carries (pid, command, since when)."""
    f.seek(0)
    return f.read().strip() or "another process"


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[str], None] | None = None, *, timeout: float | None = None,
              what: str = "", record: bool = True) -> Iterator[None]:
    """An exclusive flock on `path`. The holder writes its pid, command and start time into the
    file, so a waiting process can say who it waits for: on_wait gets that line at once and again
    every LOCK_REMIND_S seconds. Without a timeout it waits as long as it takes; after `timeout`
    seconds it gives up with LockedError (exit 3) naming the holder. The lock dies with its
    holder, SIGKILL included (the descriptor is not inherited by the commands it starts)."""
    from .errors import LockedError  # errors imports nothing of ours; kept local to stay a leaf

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        started = told = time.monotonic()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(lock_holder(f))
            while True:
                time.sleep(LOCK_POLL_S)
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if timeout is not None and now - started >= timeout:
                        raise LockedError(f"{what or path}: held by {lock_holder(f)}; gave up after "
                                          f"{timeout:.0f}s (--wait). Try again when it finishes.") from None
                    if on_wait is not None and now - told >= LOCK_REMIND_S:
                        told = now
                        on_wait(f"{lock_holder(f)}; waiting {now - started:.0f}s so far")
        try:
            if record:  # (a lock whose holders are readers records nobody: see shared_lock)
                f.seek(0)
                f.truncate()
                # Who holds it, for whoever waits: never sys.argv, whose option values may be secrets.
                f.write(f"pid {os.getpid()} ({shown_command()}) since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def shared_lock(path: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """A shared flock on `path`: any number of readers hold it at once, and a writer's exclusive
    file_lock waits until they are done (as they wait for it). A reader writes nothing into the
    file; while it waits, on_wait hears the writer's holder line (if it records one), once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(lock_holder(f))
            fcntl.flock(f, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """An exclusive flock on an existing lock file without waiting: yields True while held, False
    when another process holds it. A missing lock file yields True (nobody can hold it) and is
    not created. For housekeeping that must skip what a running process uses."""
    try:
        f = open(path, "r+")  # noqa: SIM115 -- closed below
    except FileNotFoundError:
        yield True
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
