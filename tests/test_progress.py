"""Progress: the timer-driven heartbeat, step estimates from the previous build, timings.json."""

from __future__ import annotations

import threading

from wheelfactory.progress import Heartbeat, StepClock, Timings, describe_command, fmt_duration, interval_from_env


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


def test_heartbeat_line_names_command_elapsed_log_step_eta_and_last_line(tmp_path):
    clock = FakeClock()
    lines: list[str] = []
    hb = Heartbeat("torch", ["/usr/bin/ninja", "-j4"], tmp_path / "torch.log", interval=60,
                   step=StepClock(started=clock.now - 600, previous_s=6720), clock=clock, write=lines.append)
    clock.now += 723
    hb.seen("[1200/5000] Building CUDA object x.cu.o")
    assert hb.beat()
    assert lines == [f"[torch] still running: ninja -j4 (12m03s, log: {tmp_path / 'torch.log'}); step 22m03s; "
                     "previous build took 1h52m, ETA ~1h29m; last: [1200/5000] Building CUDA object x.cu.o\n"]


def test_step_longer_than_last_time_says_so_and_no_estimate_without_history():
    assert StepClock(0, 100).estimate(160) == "step 2m40s; longer than the previous build (1m40s)"
    assert StepClock(0).estimate(5) == "step 5s"


def test_verbose_mode_beats_only_after_a_quiet_interval(tmp_path):
    clock = FakeClock()
    lines: list[str] = []
    hb = Heartbeat("x", ["make"], tmp_path / "log", interval=60, only_when_quiet=True, clock=clock,
                   write=lines.append)
    clock.now += 59
    hb.seen("compiling")
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

    with Heartbeat("vllm", ["git", "clone", "x"], tmp_path / "log", interval=0.01, write=write):
        assert fired.wait(timeout=10), "no heartbeat although nothing was printed"
    count = len(lines)
    assert lines[0].startswith("[vllm] still running: git clone x (0s, log: ")
    fired.clear()
    assert not fired.wait(timeout=0.1) and len(lines) == count  # stopped with the command


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
