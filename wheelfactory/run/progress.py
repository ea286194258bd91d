"""Progress a person can read while a build runs for hours.

Every running command of a build step has a status: the component, the step's phase, the command,
how long it has run and how long it has printed nothing, and, for ninja/make builds, the `[N/M]`
counter with an ETA from the rate at which N moves. The previous build's duration of the component
(`<cache>/timings.json`) gives the step's ETA where there is no counter.

How it is shown depends on where stderr goes:

- a terminal: one live line per running step (rich), redrawn by rich's own timer, so the elapsed
  times move while a command prints nothing (a quiet `pip install`, a `git clone`, a long link);
- anything else (CI logs, a pipe, a file): plain lines, one per phase change and one progress
  line every WHEELFACTORY_HEARTBEAT_S seconds (default 60) from a timer thread;
- quiet (`build --quiet`): nothing but errors and the final summary.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..core.cachelayout import CacheLayout
from ..store.wheelhouse import atomic_write_text

DEFAULT_INTERVAL_S = 60.0  # a line a minute: often enough to see life, rare enough for CI logs
INTERVAL_ENV = "WHEELFACTORY_HEARTBEAT_S"
# The status says how long the command has printed nothing once it is this long: a link, a pip
# resolve or a clone shows its own elapsed time, not only the step's.
QUIET_AFTER_S = 10.0

# Where progress goes: a live status line (a terminal), plain lines (logs, pipes), or nowhere.
LIVE, PLAIN, QUIET = "live", "plain", "quiet"
OUTPUT_MODES = (LIVE, PLAIN, QUIET)

# The phases of a build step, in order (the executor's PHASES): `note("phase X done")` moves the
# status to the phase after X, for callers that mark the end of phases rather than their start.
STEP_PHASES = ("fetch", "prepare", "configure", "build", "repair", "publish")


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


def fmt_rate(per_second: float) -> str:
    """4.2/s, or 37/min for the slow items of a CUDA build."""
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    per_minute = per_second * 60
    return f"{per_minute:.1f}/min" if per_minute < 10 else f"{per_minute:.0f}/min"


def describe_command(argv: Sequence[str], width: int = 80) -> str:
    """The command as a person would type it, the program without its directory, cut to width."""
    if not argv:
        return ""
    text = shlex.join([argv[0].rsplit("/", 1)[-1], *argv[1:]])
    return text if len(text) <= width else text[: width - 3] + "..."


# -- the [N/M] counter of ninja and make ----------------------------------------------------------

class Count(NamedTuple):
    done: int
    total: int
    percent: bool  # CMake's Makefile `[ 42%]`: done is a percentage of 100


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# ninja's default NINJA_STATUS "[%f/%t] ": `[1234/5678] Building CXX object ...`
_NINJA = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]")
# CMake-generated Makefiles: `[ 42%] Building CXX object ...`, `[100%] Linking ...`
_MAKE = re.compile(r"\[\s*(\d{1,3})%\]")


def parse_progress(line: str) -> Count | None:
    """The build counter at the start of a ninja or CMake-make output line, or None."""
    text = _ANSI.sub("", line).lstrip()
    if m := _NINJA.match(text):
        done, total = int(m[1]), int(m[2])
        return Count(done, total, False) if 0 < total and done <= total else None
    if m := _MAKE.match(text):
        pct = int(m[1])
        return Count(pct, 100, True) if pct <= 100 else None
    return None


class RateEta:
    """The ETA of a ninja/make build from how fast its counter moves.

    Estimator: the rate over the last W completed items, measured up to *now*:

        rate = (N_now - N_ref) / (now - t_ref)      (t_ref, N_ref): the last sample with N <= N_now - W
        ETA  = (M - N_now) / rate                   W = 5% of M, at least 10 and at most 500 items

    - Recent items, not the whole run: the rate changes during a build (cached objects fly by at
      the start, CUDA kernels are slower than C++ files), and the last few hundred items predict
      the next ones better than the average since the start.
    - A window of items, not of seconds: it always spans W completions, so the rate is never 0/0
      and never the rate of one burst (ninja -j20 finishes files in clumps).
    - Measured to now, not to the last completion: while the counter stands still (one 20-minute
      nvcc file, the last link of libtorch, the slow tail where fewer items are left than jobs)
      the rate falls as the stall grows and the ETA rises smoothly, instead of freezing at an
      optimistic value or counting down to 0s and staying there. The first completion after the
      stall brings it back.
    - No ETA before the counter moved by `min_items` over `min_seconds`: the first items say
      nothing about the rest.

    A counter that goes back or changes its total is another ninja run (a sub-build): the
    estimate starts again. A percentage (make) that goes back a little is make -j's interleaving
    of targets, ignored.
    """

    def __init__(self, *, min_items: int = 3, min_seconds: float = 1.0, window_fraction: float = 0.05,
                 min_window: int = 10, max_window: int = 500):
        self.min_items = min_items
        self.min_seconds = min_seconds
        self.window_fraction = window_fraction
        self.min_window = min_window
        self.max_window = max_window
        self.done = 0
        self.total = 0
        self.percent = False
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()  # fed by the reading thread, read by the display's timer

    def add(self, now: float, count: Count) -> None:
        with self._lock:
            if count.percent and self.percent and self._samples and count.done < self.done:
                return  # make -j: another target's lower percentage
            if count.total != self.total or count.percent != self.percent or count.done < self.done \
                    or not self._samples:
                self._samples.clear()
                self.total, self.percent = count.total, count.percent
            elif count.done == self.done:
                return  # no progress: the first time it reached this count is the one that matters
            self.done = count.done
            self._samples.append((now, count.done))
            # Keep one sample at or below the window's start (the reference), drop older ones.
            target = self.done - self.window()
            while len(self._samples) > 1 and self._samples[1][1] <= target:
                self._samples.popleft()

    def window(self) -> int:
        return max(self.min_window, min(self.max_window, int(self.total * self.window_fraction)))

    def rate(self, now: float) -> float | None:
        """Items per second over the window, or None while there is too little to tell."""
        with self._lock:
            if not self._samples:
                return None
            t_ref, n_ref = self._samples[0]
            items, span = self.done - n_ref, now - t_ref
        if items < self.min_items or span < self.min_seconds or span <= 0:
            return None
        return items / span

    def eta(self, now: float) -> float | None:
        """Seconds until the counter reaches its total, or None."""
        rate = self.rate(now)
        return None if rate is None else (self.total - self.done) / rate


# -- one running step ------------------------------------------------------------------------------

@dataclass
class StepClock:
    """A running build step: when it started and how long the previous build of it took."""

    started: float  # on the status's clock (time.monotonic by default)
    previous_s: float | None = None

    def estimate(self, now: float, *, eta: bool = True) -> str:
        """'step 25m10s; previous build took 1h52m, ETA ~1h27m', or without the estimate."""
        elapsed = now - self.started
        text = f"step {fmt_duration(elapsed)}"
        if self.previous_s is None:
            return text
        left = self.previous_s - elapsed
        if not eta:
            return f"{text}; previous build took {fmt_duration(self.previous_s)}"
        if left > 0:
            return f"{text}; previous build took {fmt_duration(self.previous_s)}, ETA ~{fmt_duration(left)}"
        return f"{text}; longer than the previous build ({fmt_duration(self.previous_s)})"


class StepStatus:
    """What a status line shows for one runner: component, phase, the running command and its
    elapsed and quiet time, the [N/M] counter with its rate-based ETA, the step's time and the
    previous build's duration. Written by the thread reading the command's output, read by timers."""

    def __init__(self, component: str, *, clock: Callable[[], float] = time.monotonic):
        self.component = component
        self.clock = clock
        self.phase: str | None = None
        self.step: StepClock | None = None
        self.command = ""  # describe_command(argv): the running command as a person would type it
        self.argv: list[str] = []
        self.log_path: Path | None = None
        self.command_started: float | None = None
        self.last_output: float | None = None
        self.last_line = ""
        self.counter = RateEta()
        self._spinner: Any = None

    def start_command(self, argv: Sequence[str], log_path: Path | None = None) -> None:
        now = self.clock()
        self.argv, self.command, self.log_path = list(argv), describe_command(argv), log_path
        self.command_started = self.last_output = now
        self.last_line = ""
        self.counter = RateEta()  # each command its own counter: a new ninja run counts from 1

    def end_command(self) -> None:
        """Between commands (a step-wide line): no command, counter or last line of a finished one."""
        self.argv, self.command, self.command_started = [], "", None
        self.last_output, self.last_line, self.counter = None, "", RateEta()

    def seen(self, line: str) -> None:
        """The command printed a line (called from the reading thread)."""
        now = self.clock()
        self.last_output = now
        if line.strip():
            self.last_line = line
        if (count := parse_progress(line)) is not None:
            self.counter.add(now, count)

    # The pieces both renderers use.
    def counter_text(self, c: RateEta | None = None) -> str | None:
        c = c or self.counter
        if not c.total:
            return None
        if c.percent:
            return f"[{c.done:3d}%]"
        return f"[{c.done}/{c.total}] {100 * c.done // c.total}%"

    def eta_text(self, now: float, c: RateEta | None = None) -> str | None:
        """The counter's ETA ('ETA ~15m20s at 4.1/s'), or None without a usable rate."""
        c = c or self.counter
        if c.total and c.done >= c.total:
            return "finishing"
        rate, eta = c.rate(now), c.eta(now)
        if rate is None or eta is None:
            return None
        unit = "%" if c.percent else ""
        return f"ETA ~{fmt_duration(math.ceil(eta))} at {fmt_rate(rate).replace('/', unit + '/', 1)}"

    def quiet_for(self, now: float) -> float | None:
        if self.last_output is None or self.command_started is None:
            return None
        quiet = now - self.last_output
        return quiet if quiet >= QUIET_AFTER_S else None

    def plain_line(self) -> str:
        """The heartbeat: '[torch] still running: ninja -j4 (12m03s, log: PATH); phase build;
        [1200/5000] 24%, ETA ~15m20s at 2.0/s; step 22m03s; previous build took 1h52m; last: ...'"""
        now = self.clock()
        started = self.command_started if self.command_started is not None else now
        text = f"[{self.component}] still running: {self.command} ({fmt_duration(now - started)}"
        if self.log_path is not None:
            text += f", log: {self.log_path}"
        text += ")"
        if self.phase:
            text += f"; phase {self.phase}"
        if (quiet := self.quiet_for(now)) is not None:
            text += f"; no output for {fmt_duration(quiet)}"
        eta, c = None, self.counter  # once: the reading thread replaces it for the next command
        if counter := self.counter_text(c):
            eta = self.eta_text(now, c)
            text += f"; {counter}" + (f", {eta}" if eta else "")
        if self.step is not None:
            text += f"; {self.step.estimate(now, eta=eta is None)}"
        if self.last_line:
            text += f"; last: {self.last_line.strip()[:100]}"
        return text

    def renderable(self) -> Any:
        """The live line (rich): spinner, component, phase, command, [N/M] with a bar, ETA, elapsed
        times, previous build; cut at the terminal's width, never wrapped."""
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        now = self.clock()
        if self._spinner is None:
            self._spinner = Spinner("dots", style="cyan")
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(self.component, style="bold cyan")
        if self.phase:
            head.append(f" {self.phase}", style="magenta")
        if self.command_started is not None:
            # Paths to their last part: the line has room for `python3 ninja.py`, not for the work tree.
            short = [a.rstrip("/").rsplit("/", 1)[-1] if a.startswith("/") else a for a in self.argv]
            head.append(f"  {describe_command(short, 48)} ", style="dim")
            head.append(fmt_duration(now - self.command_started))
            if (quiet := self.quiet_for(now)) is not None:
                head.append(f", quiet {fmt_duration(quiet)}", style="yellow")
        tail = Text(no_wrap=True, overflow="ellipsis")
        eta = bar = None
        c = self.counter  # once: the reading thread replaces it for the next command
        if counter := self.counter_text(c):
            bar = ProgressBar(total=c.total, completed=c.done, width=20)
            tail.append(counter, style="bold")
            if eta := self.eta_text(now, c):
                tail.append(f"  {eta}", style="green")
        elif self.last_line:
            tail.append(self.last_line.strip()[:60], style="dim")
        if self.step is not None:
            tail.append(f"  step {fmt_duration(now - self.step.started)}")
            if (previous := self.step.previous_s) is not None:
                tail.append(f", previous {fmt_duration(previous)}", style="dim")
                if eta is None and (left := previous - (now - self.step.started)) > 0:
                    tail.append(f"  ETA ~{fmt_duration(left)}", style="green")
        row = Table.grid(padding=(0, 1))
        row.add_row(self._spinner, head, *([bar] if bar is not None else []), tail)
        return row


class Heartbeat:
    """Prints the status's plain line every `interval` seconds while a command runs, whether or not
    it prints: the timer, not the output, drives it. With `only_when_quiet` (verbose mode, where
    output is already echoed) a beat is skipped if a line arrived within the interval."""

    def __init__(self, status: StepStatus, *, interval: float, only_when_quiet: bool = False,
                 write: Callable[[str], Any] | None = None):
        self.status = status
        self.interval = interval
        self.only_when_quiet = only_when_quiet
        self.write = write or (lambda text: sys.stderr.write(text))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write one status line unless it is not due (quiet-only mode with recent output)."""
        s = self.status
        if self.only_when_quiet and s.last_output is not None and s.clock() - s.last_output < self.interval:
            return False
        self.write(s.plain_line() + "\n")
        return True

    def _loop(self) -> None:
        # Event.wait returns True only when stopped: the command's end never waits out an interval.
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.status.component}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# -- where it goes ---------------------------------------------------------------------------------

_mode: str | None = None  # set by the command line (output_mode_set); None: from stderr


def output_mode() -> str:
    """LIVE when stderr is a terminal that can redraw a line, else PLAIN; QUIET or another mode
    when the command line set one."""
    if _mode is not None:
        return _mode
    stream = sys.stderr
    try:
        tty = stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return LIVE if tty and os.environ.get("TERM", "") not in ("dumb", "unknown") else PLAIN


@contextlib.contextmanager
def output_mode_set(mode: str | None) -> Iterator[None]:
    """Use `mode` for every runner's progress within the block (None: decide from stderr)."""
    global _mode
    if mode is not None and mode not in OUTPUT_MODES:
        raise ValueError(f"unknown progress output {mode!r}; one of {', '.join(OUTPUT_MODES)}")
    saved, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = saved


class StatusBoard:
    """The live lines on a terminal: one row per running step, one rich Live for all of them
    (started with the first row, gone with the last). rich redraws it on its own timer thread,
    calling `_render` for the current state, so the times move while nothing is printed. Lines
    printed meanwhile (echoed build output, the factory's messages) appear above it."""

    def __init__(self, console: Any = None, refresh_per_second: float = 4):
        self._console = console
        self.refresh_per_second = refresh_per_second
        self._rows: list[StepStatus] = []
        self._live: Any = None
        self._lock = threading.Lock()

    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, force_terminal=True)
        return self._console

    def add(self, status: StepStatus) -> None:
        from rich.live import Live

        with self._lock:
            self._rows.append(status)
            if self._live is None:
                self._live = Live(console=self.console(), get_renderable=self._render, transient=True,
                                  refresh_per_second=self.refresh_per_second)
                self._live.start()

    def remove(self, status: StepStatus) -> None:
        with self._lock:
            if status in self._rows:
                self._rows.remove(status)
            live = self._live if not self._rows else None
            if live is not None:
                self._live = None
        if live is not None:
            live.stop()  # outside the lock: stopping waits for the refresh thread, which renders

    def active(self) -> bool:
        """Whether live rows are on the terminal now: a line must then go through print(), above them."""
        return self._live is not None

    def print(self, text: str) -> None:
        """A line above the live rows (the build output --verbose echoes)."""
        from rich.text import Text

        self.console().print(Text(text), soft_wrap=True)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        rows = list(self._rows)
        try:
            return Group(*(s.renderable() for s in rows))
        except Exception as e:  # a status must never stop the build; show why it is missing
            return Text(f"(status unavailable: {e})")

    @contextlib.contextmanager
    def showing(self, status: StepStatus) -> Iterator[None]:
        self.add(status)
        try:
            yield
        finally:
            self.remove(status)


BOARD = StatusBoard()


class Timings:
    """Per-component durations of the last successful build, in <cache>/timings.json.

    Durations depend on the machine and the jobs count, not on the build key: the previous
    build of the component is the best estimate there is, even across versions."""

    def __init__(self, cache_dir: Path):
        self.path = CacheLayout(cache_dir).timings

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
