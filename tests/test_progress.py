"""Progress: the [N/M] parser, the rate-based ETA, the status line (plain and live), the
timer-driven heartbeat, step estimates from the previous build, timings.json. No subprocess here:
tests/test_runner.py drives a fake ninja on a pseudo-terminal and through a pipe."""

from __future__ import annotations

import io
import threading

import pytest
from rich.console import Console

from wheelfactory.run.progress import (
    LIVE,
    PLAIN,
    QUIET,
    Count,
    Heartbeat,
    RateEta,
    StatusBoard,
    StepClock,
    StepStatus,
    Timings,
    describe_command,
    fmt_duration,
    fmt_rate,
    interval_from_env,
    output_mode,
    output_mode_set,
    parse_progress,
)
from wheelfactory.run.runner import Runner


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_durations_read_like_a_clock():
    assert [fmt_duration(s) for s in (0, 45, 60, 723, 3599, 3600, 6720, -3)] == \
        ["0s", "45s", "1m00s", "12m03s", "59m59s", "1h00m", "1h52m", "0s"]


def test_command_without_its_directory_and_cut_to_width():
    assert describe_command(["/usr/bin/ninja", "-j", "8"]) == "ninja -j 8"
    long = describe_command(["/x/python3", "-m", "pip", "install", *["pkg"] * 40], width=40)
    assert long.startswith("python3 -m pip install") and long.endswith("...") and len(long) == 40


def status_at(clock, component="torch", argv=("/usr/bin/ninja", "-j4"), log=None) -> StepStatus:
    s = StepStatus(component, clock=clock)
    s.start_command(list(argv), log)
    return s


def test_heartbeat_line_names_command_elapsed_log_phase_step_eta_and_last_line(tmp_path):
    clock = FakeClock()
    lines: list[str] = []
    status = status_at(clock, log=tmp_path / "torch.log")
    status.step = StepClock(started=clock.now - 600, previous_s=6720)
    status.phase = "build"
    hb = Heartbeat(status, interval=60, write=lines.append)
    clock.now += 723
    status.seen("checking for something")
    assert hb.beat()
    # No counter: the step's ETA comes from the previous build's duration.
    assert lines == [f"[torch] still running: ninja -j4 (12m03s, log: {tmp_path / 'torch.log'}); phase build; "
                     "step 22m03s; previous build took 1h52m, ETA ~1h29m; last: checking for something\n"]


def test_heartbeat_with_a_counter_gives_the_rate_eta_and_how_long_nothing_was_printed(tmp_path):
    clock = FakeClock()
    status = status_at(clock, log=tmp_path / "log")
    status.step = StepClock(started=clock.now, previous_s=6720)
    for n in range(1000, 1201, 10):  # 10 items every 5 s: 2/s
        status.seen(f"[{n}/5000] Building CUDA object x{n}.cu.o")
        clock.now += 5
    clock.now += 15  # then 20 s without a line (a big nvcc file)
    line = status.plain_line()
    # The rate is measured to now: 200 items over the last 120 s, not 100 s.
    assert "; [1200/5000] 24%, ETA ~38m00s at 1.7/s; " in line
    assert "; no output for 20s; " in line
    assert "; step 2m00s; previous build took 1h52m; " in line  # one ETA: the counter's
    assert line.endswith("last: [1200/5000] Building CUDA object x1200.cu.o")


def test_step_longer_than_last_time_says_so_and_no_estimate_without_history():
    assert StepClock(0, 100).estimate(160) == "step 2m40s; longer than the previous build (1m40s)"
    assert StepClock(0).estimate(5) == "step 5s"
    assert StepClock(0, 100).estimate(30, eta=False) == "step 30s; previous build took 1m40s"


def test_verbose_mode_beats_only_after_a_quiet_interval(tmp_path):
    clock = FakeClock()
    lines: list[str] = []
    hb = Heartbeat(status_at(clock, "x", ["make"]), interval=60, only_when_quiet=True, write=lines.append)
    clock.now += 59
    hb.status.seen("compiling")
    clock.now += 30  # output 30 s ago: the echoed output shows life already
    assert not hb.beat() and lines == []
    clock.now += 31
    assert hb.beat() and len(lines) == 1


def test_the_timer_fires_although_the_command_prints_nothing(tmp_path):
    fired = threading.Event()
    lines: list[str] = []

    def write(text: str) -> None:
        lines.append(text)
        fired.set()

    status = StepStatus("vllm")
    status.start_command(["git", "clone", "x"], tmp_path / "log")
    with Heartbeat(status, interval=0.01, write=write):
        assert fired.wait(timeout=10), "no heartbeat although nothing was printed"
    count = len(lines)
    assert lines[0].startswith("[vllm] still running: git clone x (0s, log: ")
    fired.clear()
    assert not fired.wait(timeout=0.1) and len(lines) == count  # stopped with the command


# -- the counter -----------------------------------------------------------------------------------

def test_ninja_and_cmake_make_counters_are_parsed():
    assert parse_progress("[1234/5678] Building CXX object caffe2/CMakeFiles/torch.dir/x.cpp.o") == \
        Count(1234, 5678, False)
    assert parse_progress("  [ 12 / 300 ] Linking CXX shared library lib/libtorch.so") == Count(12, 300, False)
    assert parse_progress("\x1b[1m[7/9]\x1b[0m Building CUDA object") == Count(7, 9, False)  # colored
    assert parse_progress("[ 42%] Building CXX object src/CMakeFiles/nccl.dir/init.cc.o") == Count(42, 100, True)
    assert parse_progress("[100%] Built target nccl") == Count(100, 100, True)
    for other in ("[INFO] downloading", "building [1/2]", "[3/0] x", "[5/4] x", "[250%] x", "", "Collecting torch"):
        assert parse_progress(other) is None, other


def feed(eta: RateEta, points):
    for t, n, total in points:
        eta.add(t, Count(n, total, False))


def test_a_steady_rate_gives_the_remaining_items_over_it():
    eta = RateEta()
    feed(eta, [(t, 10 * t, 1000) for t in range(0, 31)])  # 10 items/s for 30 s
    assert eta.rate(30) == pytest.approx(10)
    assert eta.eta(30) == pytest.approx(70)  # 700 left


def test_the_rate_is_that_of_the_recent_items_not_of_the_whole_run():
    eta = RateEta()  # window: 5% of 10000 = 500 items
    feed(eta, [(t, 100 * t, 10000) for t in range(0, 21)])  # cached objects: 100/s up to 2000
    feed(eta, [(20 + t, 2000 + 5 * t, 10000) for t in range(1, 201)])  # then CUDA: 5/s up to 3000
    assert eta.rate(220) == pytest.approx(5)  # the last 500 items, all at 5/s
    assert eta.eta(220) == pytest.approx(1400)


def test_a_stall_raises_the_eta_smoothly_and_progress_brings_it_back():
    eta = RateEta()  # window: 10 items (the minimum)
    feed(eta, [(t, t, 100) for t in range(0, 51)])  # 1 item/s
    assert eta.eta(50) == pytest.approx(50)
    # 20 s on one file: the rate over the last 10 items is measured to now, 10 / 30 s
    assert eta.eta(70) == pytest.approx(150)
    assert eta.eta(60) < eta.eta(65) < eta.eta(70)  # rising, not frozen, not counting down to 0
    feed(eta, [(71, 60, 100)])  # ten items finish at once after the long one
    assert eta.rate(71) == pytest.approx(10 / 21)
    assert eta.eta(71) == pytest.approx(84)  # back down from 150


def test_no_eta_before_the_counter_has_moved_enough():
    eta = RateEta()
    assert eta.eta(0) is None
    feed(eta, [(0, 1, 50), (0.5, 2, 50), (0.7, 3, 50)])
    assert eta.eta(0.8) is None  # 2 items
    feed(eta, [(0.9, 4, 50)])
    assert eta.eta(0.95) is None  # 3 items, but in under a second
    assert eta.eta(1.0) == pytest.approx(46 / 3)


def test_another_ninja_run_starts_the_estimate_again_and_make_percentages_only_go_up():
    eta = RateEta()
    feed(eta, [(t, t * 2, 100) for t in range(0, 11)])
    feed(eta, [(20, 1, 30)])  # another total: a sub-build's ninja
    assert (eta.done, eta.total, eta.eta(21)) == (1, 30, None)
    feed(eta, [(30, 5, 30), (31, 2, 30)])  # counting back: another run again
    assert (eta.done, eta.total) == (2, 30)
    make = RateEta()
    for t, pct in [(0, 10), (10, 20), (11, 18), (20, 30)]:  # make -j interleaves targets' percentages
        make.add(t, Count(pct, 100, True))
    assert make.done == 30 and make.rate(20) == pytest.approx(1.0)


def test_rates_read_per_second_or_per_minute():
    assert [fmt_rate(r) for r in (12.34, 1.0, 0.5, 0.1, 0.01)] == ["12.3/s", "1.0/s", "30/min", "6.0/min", "0.6/min"]


# -- the live line -------------------------------------------------------------------------------

def render(status: StepStatus, width: int = 200) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(status.renderable())
    return out.getvalue()


def test_the_live_line_shows_component_phase_command_counter_eta_elapsed_and_previous_build():
    clock = FakeClock()
    status = status_at(clock, argv=["/usr/bin/ninja", "-j20"])
    status.step = StepClock(started=clock.now - 60, previous_s=6720)
    status.phase = "build"
    for n in range(0, 101, 10):
        status.seen(f"[{n + 1}/400] Building CXX object o{n}.o")
        clock.now += 10
    text = render(status)
    assert "torch build  ninja -j20 1m50s, quiet 10s" in text
    # window: 5% of 400 = 20 items, 81 -> 101 in the last 30 s: 40/min, 299 left
    assert "[101/400] 25%  ETA ~7m29s at 40/min  step 2m50s, previous 1h52m" in text
    assert "━" in text  # the bar


def test_a_quiet_command_shows_how_long_it_has_been_quiet_and_the_previous_builds_eta():
    clock = FakeClock()
    status = status_at(clock, argv=["/venv/bin/python", "-m", "pip", "install", "cmake"])
    status.step = StepClock(started=clock.now, previous_s=600)
    status.phase = "prepare"
    status.seen("Collecting cmake")
    clock.now += 75
    text = render(status)
    assert "torch prepare  python -m pip install cmake 1m15s, quiet 1m15s" in text
    assert "Collecting cmake  step 1m15s, previous 10m00s  ETA ~8m45s" in text


def test_the_live_line_is_cut_to_the_terminal_never_wrapped():
    status = status_at(FakeClock())
    status.seen("x" * 500)
    assert len(render(status, width=80).splitlines()) == 1


def test_a_broken_status_does_not_break_the_board():
    class Broken(StepStatus):
        def renderable(self):
            raise RuntimeError("boom")

    board = StatusBoard(console=Console(file=io.StringIO()))
    board._rows.append(Broken("x"))
    out = io.StringIO()
    Console(file=out, width=80).print(board._render())
    assert "status unavailable: boom" in out.getvalue()


# -- modes and the phase API ---------------------------------------------------------------------------

def test_plain_off_a_terminal_and_the_command_line_can_set_the_mode(capsys):
    assert output_mode() == PLAIN  # captured stderr is no terminal
    with output_mode_set(QUIET):
        assert output_mode() == QUIET
        with output_mode_set(LIVE):
            assert output_mode() == LIVE
        assert output_mode() == QUIET
    assert output_mode() == PLAIN
    with pytest.raises(ValueError), output_mode_set("loud"):
        pass


def test_the_phase_is_set_or_follows_the_phase_done_notes(tmp_path, capsys):
    r = Runner("torch", tmp_path / "log", base_env={})
    assert r.phase is None
    r.set_phase("fetch")
    r.note("phase fetch done")
    assert r.phase == "prepare"
    r.note("phase configure done")
    assert r.phase == "build"
    r.note("phase publish done")  # the last one: stays
    r.phase = "repair"
    r.set_phase("repair")  # no change, no line
    assert capsys.readouterr().err.splitlines() == ["[torch] phase fetch", "[torch] phase prepare",
                                                    "[torch] phase build", "[torch] phase repair"]
    assert "[torch] phase fetch done" in (tmp_path / "log").read_text()


def test_quiet_prints_no_phase_lines(tmp_path, capsys):
    r = Runner("torch", tmp_path / "log", base_env={}, output=QUIET)
    r.set_phase("build")
    with output_mode_set(QUIET):
        Runner("vllm", tmp_path / "log2", base_env={}).set_phase("build")
    assert capsys.readouterr().err == ""


def test_timings_keep_the_last_successful_build_per_component(tmp_path):
    t = Timings(tmp_path)
    assert t.previous("torch") is None
    t.record("torch", 6720.04, version="2.10.0", key="a" * 64)
    t.record("nccl", 168, version="2.29.2-1", key="b" * 64)
    assert t.previous("torch") == 6720.0 and t.previous("nccl") == 168.0
    t.record("torch", 5000, version="2.11.0", key="c" * 64)
    assert Timings(tmp_path).previous("torch") == 5000.0


def test_a_damaged_timings_file_only_loses_the_estimate(tmp_path):
    (tmp_path / "timings.json").write_text("{not json")
    t = Timings(tmp_path)
    assert t.previous("torch") is None
    t.record("torch", 10, version="1", key="k")
    assert t.previous("torch") == 10.0


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("WHEELFACTORY_HEARTBEAT_S", "15")
    assert interval_from_env() == 15.0
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("WHEELFACTORY_HEARTBEAT_S", bad)
        assert interval_from_env() == 60.0
def test_build_quiet_and_verbose_contradict_and_quiet_keeps_only_warnings(tmp_path, capsys):
    from click.testing import CliRunner

    from wheelfactory.cli.app import cli
    from wheelfactory.cli.options import say_warnings as _quiet_echo
    from wheelfactory.core.errors import InputError

    res = CliRunner().invoke(cli, ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"),
                                   "build", "--quiet", "--verbose"])
    assert isinstance(res.exception, InputError) and "--quiet and --verbose" in str(res.exception)
    assert "--quiet" in CliRunner().invoke(cli, ["build", "--help"]).output
    for line in ("[1/3] torch 2.10.0: build (log: x)", "host: ok ccache", "warning: no nvcc", "[2/3] nccl: done"):
        _quiet_echo(line)
    assert capsys.readouterr().err == "warning: no nvcc\n"


def test_the_factorys_messages_go_above_live_status_rows_never_over_them(monkeypatch, capsys):
    from wheelfactory.cli import options as cli
    from wheelfactory.run.progress import BOARD

    printed: list[str] = []
    monkeypatch.setattr(BOARD, "print", printed.append)
    cli.say("downloading 14 CUDA 13.1.0 toolkit wheel(s)")  # no live rows: a plain line on stderr
    assert printed == [] and capsys.readouterr().err == "downloading 14 CUDA 13.1.0 toolkit wheel(s)\n"
    monkeypatch.setattr(BOARD, "_live", object())  # a build's rows are up
    cli.say("assembling the CUDA 13.1.0 toolkit")
    assert printed == ["assembling the CUDA 13.1.0 toolkit"] and capsys.readouterr().err == ""
