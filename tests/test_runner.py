"""The one subprocess chokepoint: logging, environment changes, failures, heartbeat."""

from __future__ import annotations

import os
import re
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.run import runner as runner_mod
from wheelfactory.run.runner import Runner, clean_environ


@pytest.mark.slow  # runs commands (the Runner's job)
def test_logs_command_env_changes_and_output_with_prefix(tmp_path):
    r = Runner("nccl", tmp_path / "log", base_env={"PATH": "/usr/bin:/bin", "A": "1"})
    out = r.run(["sh", "-c", "echo hello; echo $A$B"], env={"A": "1", "B": "2"}, capture=True)
    assert out == "hello\n12"
    log = (tmp_path / "log").read_text().splitlines()
    assert all(line.startswith("[nccl] ") for line in log)
    assert "[nccl] env B=2" in log and "[nccl] env A=1" not in log  # only changes are logged
    assert any(line.startswith("[nccl] $ sh -c") for line in log)


@pytest.mark.slow  # starts a process (the Runner's job)
def test_missing_program_is_a_build_error(tmp_path):
    with pytest.raises(BuildError, match="cannot run 'no-such-program-wf'"):
        Runner("x", tmp_path / "log").run(["no-such-program-wf"])


@pytest.mark.slow  # runs commands (the Runner's job)
def test_check_false_returns_output_of_a_failing_command(tmp_path):
    out = Runner("x", tmp_path / "log").run(["sh", "-c", "echo broken; exit 1"], capture=True, check=False)
    assert out == "broken"


@pytest.mark.slow
def test_heartbeat_while_a_command_prints_nothing(tmp_path, monkeypatch, capsys):
    # The timer, not the output, drives it: a silent command still shows it is alive.
    monkeypatch.setattr(runner_mod, "HEARTBEAT_S", 0.05)
    Runner("torch", tmp_path / "log").run(["sh", "-c", "sleep 0.5"])
    err = capsys.readouterr().err
    assert f"[torch] still running: sh -c 'sleep 0.5' (0s, log: {tmp_path / 'log'})" in err


def test_pip_settings_of_the_machine_do_not_leak(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/x")
    env = clean_environ()
    assert "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env
    assert env["PIP_CONFIG_FILE"]  # config files off too


# -- the status a person sees: a fake ninja through the real Runner, on a terminal and in a pipe ------

REPO = Path(__file__).resolve().parent.parent
FAKE_NINJA = """
import os, sys, time
total = 12
for i in range(1, total + 1):
    print(f"[{i}/{total}] Building CXX object obj{i}.o", flush=True)
    # one slow file in the middle (the timer, not output, moves the line) and a link at the end
    if "FAKE_NINJA_FAST" not in os.environ:
        time.sleep(1.6 if i == 6 else 0.6 if i == total else 0.12)
"""
BUILD = """
import sys, time
from pathlib import Path
from wheelfactory.run.progress import StepClock
from wheelfactory.run.runner import Runner
r = Runner("torch", Path(sys.argv[1]), output=None if sys.argv[3] == "auto" else sys.argv[3])
r.step = StepClock(time.monotonic(), previous_s=600)
r.note("phase configure done")  # the executor's note: the status moves on to build
r.run([sys.executable, sys.argv[2]])
print("finished", file=sys.stderr)
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _fake_build(tmp_path: Path, mode: str = "auto") -> list[str]:
    (tmp_path / "ninja.py").write_text(FAKE_NINJA)
    (tmp_path / "build.py").write_text(BUILD)
    return [sys.executable, str(tmp_path / "build.py"), str(tmp_path / "torch.log"), str(tmp_path / "ninja.py"), mode]


def _child_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color", **extra)


@pytest.mark.slow  # a subprocess on a pseudo-terminal, ~3 s
def test_on_a_terminal_a_live_line_shows_counter_eta_and_elapsed_driven_by_a_timer(tmp_path):
    import fcntl
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    proc = subprocess.Popen(_fake_build(tmp_path), stdin=slave, stdout=slave, stderr=slave, env=_child_env(),
                            close_fds=True)
    os.close(slave)
    raw, deadline = b"", time.monotonic() + 30
    while time.monotonic() < deadline:
        if not select.select([master], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    assert proc.wait(timeout=10) == 0
    text = raw.decode("utf-8", "replace")
    assert "\x1b[" in text  # drawn with terminal control sequences (rich), not printed as lines
    frames = [f.strip() for f in ANSI.sub("", text).replace("\r", "\n").splitlines() if "torch build" in f]
    assert frames, text
    assert "still running" not in text  # the live line replaces the plain heartbeat
    # component, phase, command, [N/M] with percentage, rate-based ETA, elapsed, the previous build
    assert any(re.search(r"torch build  python\S* ninja\.py \d+s .*\[\d+/12\] \d+%  ETA ~\d+s at [\d.]+/s  "
                         r"step \d+s, previous 10m00s", f) for f in frames), frames
    # While the slow file prints nothing, the line still moves: the step's time (and the ETA, the
    # rate being measured to now) change between redraws of the same [6/12].
    stalled = [f for f in frames if "[6/12]" in f]
    assert len({re.search(r"step (\d+)s", f)[1] for f in stalled}) >= 2, stalled
    assert len({m[1] for f in stalled if (m := re.search(r"ETA ~(\S+) at", f))}) >= 2, stalled
    assert any("[12/12] 100%  finishing" in f for f in frames)
    assert ANSI.sub("", text).rstrip().endswith("finished")  # the live line is gone after the command


@pytest.mark.slow  # a subprocess, ~3 s
def test_in_a_pipe_plain_lines_at_a_bounded_rate_and_quiet_prints_nothing(tmp_path):
    started = time.monotonic()
    res = subprocess.run(_fake_build(tmp_path), capture_output=True, text=True, timeout=60,
                         env=_child_env(WHEELFACTORY_HEARTBEAT_S="0.5"))
    took = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert "\x1b" not in res.stderr  # no terminal control in a log
    assert lines[0] == "[torch] phase build (step 0s)" and lines[-1] == "finished"
    beats = [line for line in lines if line.startswith("[torch] still running: python")]
    assert lines[1:-1] == beats
    assert 2 <= len(beats) <= took / 0.5 + 1  # one per interval, not one per output line
    assert all("; phase build; [" in b and "/12] " in b and "; step " in b for b in beats)
    assert any(re.search(r"; \[6/12\] 50%, ETA ~\d+s at [\d.]+/s; step \ds; previous build took 10m00s; "
                         r"last: \[6/12\] Building CXX object obj6.o$", b) for b in beats), beats
    quiet = subprocess.run(_fake_build(tmp_path, "quiet"), capture_output=True, text=True, timeout=60,
                           env=_child_env(WHEELFACTORY_HEARTBEAT_S="0.5", FAKE_NINJA_FAST="1"))
    assert quiet.returncode == 0 and quiet.stderr == "finished\n"
    assert "[torch] [12/12] Building CXX object obj12.o" in (tmp_path / "torch.log").read_text()
