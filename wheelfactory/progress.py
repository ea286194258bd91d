"""Progress that never goes silent: a timer-driven heartbeat per running command, and the
previous build's duration of each component as an estimate for the next one.

The heartbeat runs on its own thread, so a command that prints nothing for an hour (a quiet
`pip install`, a `git clone`, the final link of libtorch) still shows a line every interval.
Durations are kept in `<cache>/timings.json`, per component, from the last successful build:
a three-hour torch build tells the user up front how long the last one took.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .wheelhouse import atomic_write_text

DEFAULT_INTERVAL_S = 60.0  # a line a minute: often enough to see life, rare enough for CI logs
INTERVAL_ENV = "WHEELFACTORY_HEARTBEAT_S"
TIMINGS_FILE = "timings.json"


def interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    """The heartbeat interval: WHEELFACTORY_HEARTBEAT_S if it is a positive number, else default."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def fmt_duration(seconds: float) -> str:
    """45s, 12m03s, 1h52m: short enough for a status line, exact enough to compare."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def describe_command(argv: Sequence[str], width: int = 80) -> str:
    """The command as a person would type it, the program without its directory, cut to width."""
    if not argv:
        return ""
    text = shlex.join([argv[0].rsplit("/", 1)[-1], *argv[1:]])
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class StepClock:
    """A running build step: when it started and how long the previous build of it took."""

    started: float  # on the heartbeat's clock (time.monotonic by default)
    previous_s: float | None = None

    def estimate(self, now: float) -> str:
        """'step 25m10s; previous build took 1h52m, ETA ~1h27m', or without the estimate."""
        elapsed = now - self.started
        text = f"step {fmt_duration(elapsed)}"
        if self.previous_s is None:
            return text
        left = self.previous_s - elapsed
        if left > 0:
            return f"{text}; previous build took {fmt_duration(self.previous_s)}, ETA ~{fmt_duration(left)}"
        return f"{text}; longer than the previous build ({fmt_duration(self.previous_s)})"


class Heartbeat:
    """Prints '[component] still running: CMD (12m03s, log: PATH)' every `interval` seconds while a
    command runs, whether or not it prints. With `only_when_quiet` (verbose mode, where output is
    already echoed) a beat is skipped if a line arrived within the interval."""

    def __init__(self, component: str, argv: Sequence[str], log_path: Path, *, interval: float,
                 step: StepClock | None = None, only_when_quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], Any] | None = None):
        self.component = component
        self.command = describe_command(argv)
        self.log_path = log_path
        self.interval = interval
        self.step = step
        self.only_when_quiet = only_when_quiet
        self.clock = clock
        self.write = write or sys.stderr.write
        self.started = clock()
        self.last_output = self.started
        self.last_line = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def seen(self, line: str) -> None:
        """The command printed a line (called from the reading thread)."""
        self.last_output = self.clock()
        if line.strip():
            self.last_line = line

    def message(self) -> str:
        now = self.clock()
        text = f"[{self.component}] still running: {self.command} ({fmt_duration(now - self.started)}, " \
               f"log: {self.log_path})"
        if self.step is not None:
            text += f"; {self.step.estimate(now)}"
        if self.last_line:
            text += f"; last: {self.last_line.strip()[:100]}"
        return text

    def beat(self) -> bool:
        """Write one status line unless it is not due (quiet-only mode with recent output)."""
        if self.only_when_quiet and self.clock() - self.last_output < self.interval:
            return False
        self.write(self.message() + "\n")
        return True

    def _loop(self) -> None:
        # Event.wait returns True only when stopped: the command's end never waits out an interval.
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.component}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class Timings:
    """Per-component durations of the last successful build, in <cache>/timings.json.

    Durations depend on the machine and the jobs count, not on the build key: the previous
    build of the component is the best estimate there is, even across versions."""

    def __init__(self, cache_dir: Path):
        self.path = cache_dir / TIMINGS_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # missing or damaged: estimates are a convenience, never a reason to fail
        return data if isinstance(data, dict) else {}

    def previous(self, component: str) -> float | None:
        entry = self._read().get(component)
        seconds = entry.get("seconds") if isinstance(entry, dict) else None
        return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None

    def record(self, component: str, seconds: float, *, version: str, key: str) -> None:
        data = self._read()
        data[component] = {"seconds": round(seconds, 1), "version": version, "key": key[:12],
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only cache still builds; only the next estimate is lost
