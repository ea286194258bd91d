"""The one subprocess chokepoint: logging, environment changes, failures, heartbeat."""

from __future__ import annotations

import pytest

from wheelfactory import runner as runner_mod
from wheelfactory.errors import BuildError
from wheelfactory.runner import Runner, clean_environ


def test_logs_command_env_changes_and_output_with_prefix(tmp_path):
    r = Runner("nccl", tmp_path / "log", base_env={"PATH": "/usr/bin:/bin", "A": "1"})
    out = r.run(["sh", "-c", "echo hello; echo $A$B"], env={"A": "1", "B": "2"}, capture=True)
    assert out == "hello\n12"
    log = (tmp_path / "log").read_text().splitlines()
    assert all(line.startswith("[nccl] ") for line in log)
    assert "[nccl] env B=2" in log and "[nccl] env A=1" not in log  # only changes are logged
    assert any(line.startswith("[nccl] $ sh -c") for line in log)


def test_missing_program_is_a_build_error(tmp_path):
    with pytest.raises(BuildError, match="cannot run 'no-such-program-wf'"):
        Runner("x", tmp_path / "log").run(["no-such-program-wf"])


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
