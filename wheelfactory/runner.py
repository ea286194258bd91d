"""The one place subprocesses run: every command is logged, its output streamed to a per-build
log with the component name as prefix, and a failure raised with the command, exit code, the
last lines of the log and the log's path. Recipes never call `subprocess` themselves."""

from __future__ import annotations

import collections
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from .errors import BuildError
from .interrupt import kill_group
from .progress import Heartbeat, StepClock, interval_from_env
from .secretenv import is_secret_name, redact

TAIL_LINES = 40
# A status line this often while a command runs, printed by a timer: a torch build, a quiet pip
# install or a long link is silent on the console for minutes to hours otherwise.
HEARTBEAT_S = interval_from_env()

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
                 base_env: Mapping[str, str] | None = None):
        self.component = component
        self.log_path = log_path
        self.verbose = verbose
        self.base_env = dict(base_env if base_env is not None else clean_environ())
        self.step: StepClock | None = None  # set by the executor: step elapsed time and ETA in heartbeats
        self.hidden: list[str] = []  # secret values (hide()): replaced by *** in the log and errors
        log_path.parent.mkdir(parents=True, exist_ok=True)

    def hide(self, values: Iterable[str]) -> None:
        """Never write these values (secrets passed to the build) to the log, the console or an
        error: the `env K=V` lines, commands and the build's own output show *** instead."""
        self.hidden += [v for v in values if v]

    def _log(self, f: TextIO, line: str) -> None:
        line = redact(line, self.hidden)
        f.write(f"[{self.component}] {line}\n")
        if self.verbose:
            sys.stderr.write(f"[{self.component}] {line}\n")

    def note(self, text: str) -> None:
        """Write a line to the log (source edits, decisions) without running anything."""
        with open(self.log_path, "a", encoding="utf-8") as f:
            self._log(f, text)

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
                                        start_new_session=True)
            except OSError as e:
                self._log(f, f"cannot start: {e}")
                raise BuildError(f"[{self.component}] cannot run {argv[0]!r}: {e}\nlog: {self.log_path}") from None
            assert proc.stdout is not None
            try:
                with Heartbeat(self.component, argv, self.log_path, interval=HEARTBEAT_S, step=self.step,
                               only_when_quiet=self.verbose) as heartbeat:
                    for line in proc.stdout:
                        line = line.rstrip("\n")
                        tail.append(line)
                        if capture:
                            captured.append(line)
                        self._log(f, line)
                        heartbeat.seen(line)
                    code = proc.wait()
            except BaseException:
                # Ctrl-C, SIGTERM/SIGHUP (interrupt.Interrupted) or any error while it runs: the
                # command is in its own session, so nothing else stops it and its children.
                kill_group(proc)
                self._log(f, f"interrupted after {time.monotonic() - started:.1f}s: stopped the command's "
                             f"process group {proc.pid}")
                raise
            self._log(f, f"exit {code} after {time.monotonic() - started:.1f}s")
        if code != 0 and check:
            shown = redact("\n".join(f"  {t}" for t in tail), self.hidden)
            raise BuildError(f"[{self.component}] command failed with exit code {code}:\n"
                             f"  $ {redact(shlex.join(argv), self.hidden)}\n"
                             f"last {len(tail)} lines of the log:\n{shown}\nfull log: {self.log_path}")
        return "\n".join(captured)
