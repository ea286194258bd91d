"""Dying cleanly: signals, the commands' process groups, critical sections, and locks between
processes that say who holds them.

Every command the Runner starts runs in its own session (its own process group), so a terminal's
Ctrl-C, a `kill PID` or a closed terminal reaches the factory only, never make/nvcc/pip directly.
The factory then turns SIGINT, SIGTERM and SIGHUP into an exception (`Interrupted`, a
KeyboardInterrupt), and the Runner kills the running command's whole group on its way out. So when
the factory stops, its children stop with it, and the CLI's "interrupted" message is true.

SIGKILL (an OOM kill, `kill -9`) cannot be caught: the running command's group outlives the factory.
The next run copes with what it left: a work directory is moved aside and recreated (never a
FileExistsError), a per-key lock keeps two builds out of one work directory, and the wheelhouse
repairs an interrupted publish under its lock (see Wheelhouse.recover). The orphaned commands
themselves run on until they finish or are killed (`kill -- -PGID`; the build log names the
command).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

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
              what: str = "") -> Iterator[None]:
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
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} ({' '.join(sys.argv) or 'python'}) since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def try_file_lock(path: Path) -> contextlib.AbstractContextManager[bool]:
    """Take `path`'s lock only if it is free: yields True when held, False when another process
    holds it (for housekeeping that must skip what a running build uses)."""
    return _try_lock(path)


@contextlib.contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
