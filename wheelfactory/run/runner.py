"""The one place subprocesses run: every command is logged, its output streamed to a per-build
log with the component name as prefix, and a failure raised with the command, exit code, the
last lines of the log and the log's path. Recipes never call `subprocess` themselves.

While a command runs, its output also drives the step's status (progress.py): the last line and
the ninja/make `[N/M]` counter; a timer shows it (a live line on a terminal, plain lines else)."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ..core.errors import BuildError
from ..core.interrupt import die_with_parent, kill_group
from ..core.secretenv import is_secret_name, redact
from .progress import (
    BOARD,
    LIVE,
    PLAIN,
    QUIET,
    STEP_PHASES,
    Heartbeat,
    StepClock,
    StepStatus,
    fmt_duration,
    interval_from_env,
    output_mode,
)

TAIL_LINES = 40
# Off a terminal, a status line this often while a command runs, printed by a timer: a torch
# build, a quiet pip install or a long link is silent in a CI log for minutes to hours otherwise.
HEARTBEAT_S = interval_from_env()
_PHASE_DONE = re.compile(r"phase (\S+) done")

# pip reads these from the environment and config files; the factory's own pip calls must see
# only the indexes it names, or a machine's find-links (say, a CPU torch on disk) slips in.
PIP_LEAKS = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT",
             "PIP_NO_INDEX", "PIP_REQUIRE_VIRTUALENV", "PYTHONPATH", "PYTHONHOME")


def clean_environ() -> dict[str, str]:
    """The parent environment minus what would make builds depend on this machine's pip set-up,
    and minus its credentials (HF_TOKEN, AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, ...): every
    third-party build script runs with this environment, and none of them needs the user's
    tokens unless a --secret-env passes one to that component (secretenv.py)."""
    env = {k: v for k, v in os.environ.items() if k not in PIP_LEAKS and not is_secret_name(k)}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


class Runner:
    """Runs commands for one build step, teeing output to its log."""

    def __init__(self, component: str, log_path: Path, *, verbose: bool = False,
                 base_env: Mapping[str, str] | None = None, output: str | None = None):
        self.component = component
        self.log_path = log_path
        self.verbose = verbose
        # progress.LIVE, PLAIN or QUIET; None: progress.output_mode() when a command runs (the
        # terminal decides, unless the command line set a mode, as `build --quiet` does).
        self.output = output
        self.base_env = dict(base_env if base_env is not None else clean_environ())
        self.status = StepStatus(component)  # what the status line shows
        self.hidden: list[str] = []  # secret values (hide()): replaced by *** in the log and errors
        # Where the running commands' process groups are listed (a step's work tree), or None.
        self.groups_file: Path | None = None
        self._showing = False
        log_path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def step(self) -> StepClock | None:
        """The build step's clock (set by the executor): step time, previous build, its ETA."""
        return self.status.step

    @step.setter
    def step(self, clock: StepClock | None) -> None:
        self.status.step = clock

    @property
    def phase(self) -> str | None:
        return self.status.phase

    @phase.setter
    def phase(self, phase: str | None) -> None:
        self.set_phase(phase)

    def mode(self) -> str:
        return self.output or output_mode()

    def set_phase(self, phase: str | None) -> None:
        """The step's current phase (fetch, prepare, configure, build, repair, publish), shown on its
        status line; off a terminal a change is a line of its own."""
        if phase == self.status.phase:
            return
        self.status.phase = phase
        if phase and self.mode() == PLAIN:
            step = f" (step {fmt_duration(self.status.clock() - self.step.started)})" if self.step else ""
            sys.stderr.write(f"[{self.component}] phase {phase}{step}\n")

    @contextlib.contextmanager
    def showing(self) -> Iterator[Runner]:
        """Keep the live status line up for the whole block (a whole step: copying sources and
        publishing too, between commands), not only while a command runs. Nests; no-op off a terminal."""
        if self._showing or self.mode() != LIVE:
            yield self
            return
        self._showing = True
        try:
            with BOARD.showing(self.status):
                yield self
        finally:
            self._showing = False

    def hide(self, values: Iterable[str]) -> None:
        """Never write these values (secrets passed to the build) to the log, the console or an
        error: the `env K=V` lines, commands and the build's own output show *** instead."""
        self.hidden += [v for v in values if v]

    def _log(self, f: TextIO, line: str) -> None:
        line = redact(line, self.hidden)
        f.write(f"[{self.component}] {line}\n")
        if self.verbose and (mode := self.mode()) != QUIET:
            if mode == LIVE and self._showing:
                BOARD.print(f"[{self.component}] {line}")  # above the live line
            else:
                sys.stderr.write(f"[{self.component}] {line}\n")

    def note(self, text: str) -> None:
        """Write a line to the log (source edits, decisions) without running anything. A note
        `phase X done` moves the status line on to the phase after X."""
        with open(self.log_path, "a", encoding="utf-8") as f:
            self._log(f, text)
        if (m := _PHASE_DONE.fullmatch(text)) and m[1] in STEP_PHASES[:-1]:
            self.set_phase(STEP_PHASES[STEP_PHASES.index(m[1]) + 1])

    def run(self, cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, capture: bool = False, check: bool = True) -> str:
        """Run a command; return its output if capture, raise BuildError if it fails (unless check=False)."""
        argv = [str(c) for c in cmd]
        full_env = dict(self.base_env)
        changes = {k: v for k, v in (env or {}).items() if self.base_env.get(k) != v}
        full_env.update(changes)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        captured: list[str] = []
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as f:
            for k in sorted(changes):
                self._log(f, f"env {k}={changes[k]}")
            self._log(f, f"$ {shlex.join(argv)}" + (f"   (in {cwd})" if cwd else ""))
            f.flush()
            started = time.monotonic()
            try:
                proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        text=True, errors="replace", bufsize=1,
                                        # Its own process group: a signal to the factory does not hit
                                        # make/nvcc/pip directly; on our way out we kill the whole group.
                                        start_new_session=True,
                                        # ... and it dies with the factory, SIGKILL included.
                                        preexec_fn=die_with_parent(os.getpid()))
            except OSError as e:
                self._log(f, f"cannot start: {e}")
                raise BuildError(f"[{self.component}] cannot run {argv[0]!r}: {e}\nlog: {self.log_path}") from None
            assert proc.stdout is not None
            self._record_group(proc.pid, running=True)
            self.status.start_command([redact(a, self.hidden) for a in argv], self.log_path)
            try:
                with self._progress():
                    for line in proc.stdout:
                        line = line.rstrip("\n")
                        tail.append(line)
                        if capture:
                            captured.append(line)
                        self._log(f, line)
                        self.status.seen(redact(line, self.hidden))
                    code = proc.wait()
            except BaseException:
                # Ctrl-C, SIGTERM/SIGHUP (interrupt.Interrupted) or any error while it runs: the
                # command is in its own session, so nothing else stops it and its children.
                kill_group(proc)
                self._log(f, f"interrupted after {time.monotonic() - started:.1f}s: stopped the command's "
                             f"process group {proc.pid}")
                raise
            finally:
                self.status.end_command()
                self._record_group(proc.pid, running=False)
            self._log(f, f"exit {code} after {time.monotonic() - started:.1f}s")
        if code != 0 and check:
            shown = redact("\n".join(f"  {t}" for t in tail), self.hidden)
            raise BuildError(f"[{self.component}] command failed with exit code {code}:\n"
                             f"  $ {redact(shlex.join(argv), self.hidden)}\n"
                             f"last {len(tail)} lines of the log:\n{shown}\nfull log: {self.log_path}")
        return "\n".join(captured)

    def _record_group(self, pgid: int, *, running: bool) -> None:
        """Keep groups_file (when set) listing the process groups of the commands running now, so
        that a run after this process's death can stop what it left (interrupt.stop_leftover_groups)."""
        if self.groups_file is None:
            return
        with contextlib.suppress(OSError):
            groups = set(self.groups_file.read_text().split()) if self.groups_file.exists() else set()
            groups = groups | {str(pgid)} if running else groups - {str(pgid)}
            self.groups_file.write_text("".join(f"{g}\n" for g in sorted(groups)))

    def _progress(self) -> contextlib.AbstractContextManager[object]:
        """What shows a running command's progress: the live line on a terminal, a timer of plain
        lines elsewhere (only after a quiet interval when --verbose echoes the output), or nothing."""
        mode = self.mode()
        if mode == LIVE:
            return self.showing()
        if mode == PLAIN:
            return Heartbeat(self.status, interval=HEARTBEAT_S, only_when_quiet=self.verbose)
        return contextlib.nullcontext()
