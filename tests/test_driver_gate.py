"""The images' driver gate (assemble/imagefiles/entrypoint.py) on recorded driver outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from assemble.imagefiles.entrypoint import (
    EXIT_DRIVER_TOO_OLD,
    HostDriver,
    check,
    command,
    parse_nvidia_smi,
    parse_proc_version,
    probe_host,
)
from wheelfactory.cuda.cuda_drivers import driver_floor, gate_env

DRIVERS = Path(__file__).resolve().parent / "data" / "drivers"
IMAGE_131 = gate_env("13.1.0")  # the environment a CUDA 13.1 image carries


def recorded(name: str) -> str:
    return (DRIVERS / name).read_text()


def host_from(files: dict[str, str | None], api: int | None = None) -> HostDriver | None:
    """probe_host over recorded outputs: nvidia-smi's, /proc's, libcuda's."""
    smi = files.get("nvidia-smi")
    proc = files.get("proc")
    return probe_host(lambda cmd: recorded(smi) if smi else None,
                      lambda path: recorded(proc) if proc else None, lambda: api)


def test_floor_of_cuda_13_1_is_the_580_driver() -> None:
    floor = driver_floor("13.1.0")
    assert (floor.minimum_driver, floor.minimum_cuda_api, floor.ptx_driver) == ("580", 13000, "590.44.01")
    assert driver_floor("12.4") is None and gate_env("12.4") == {}


def test_parsers_read_recorded_outputs() -> None:
    assert parse_nvidia_smi(recorded("nvidia-smi-570.txt")) == "570.133.20"
    assert parse_nvidia_smi(recorded("query-580.95.05.csv")) == "580.95.05"
    assert parse_nvidia_smi(recorded("query-590.44.01-two-gpus.csv")) == "590.44.01"
    assert parse_proc_version(recorded("proc-version-580.txt")) == "580.95.05"
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") is None


def test_570_driver_refused_for_a_13_1_image() -> None:
    code, message = check(host_from({"nvidia-smi": "nvidia-smi-570.txt"}), IMAGE_131)
    assert code == EXIT_DRIVER_TOO_OLD == 78
    assert "needs an NVIDIA driver >= 580" in message and "570.133.20" in message and "CUDA 13.1" in message
    assert "WHEELFACTORY_SKIP_DRIVER_CHECK=1" in message


def test_580_driver_runs_a_13_1_image_with_a_ptx_note() -> None:
    for files in ({"nvidia-smi": "query-580.95.05.csv"}, {"proc": "proc-version-580.txt"}):
        code, message = check(host_from(files), IMAGE_131)
        assert code == 0 and "cannot be JIT-compiled" in message and "590.44.01" in message, files


def test_590_driver_runs_a_13_1_image_silently() -> None:
    assert check(host_from({"nvidia-smi": "query-590.44.01-two-gpus.csv"}), IMAGE_131) == (0, "")


def test_no_gpu_says_nothing() -> None:
    assert host_from({}) is None
    assert check(None, IMAGE_131) == (0, "")


@pytest.mark.parametrize(("api", "refused"), [(12080, True), (13000, False), (13010, False)])
def test_libcuda_version_alone(api: int, refused: bool) -> None:
    host = host_from({}, api=api)
    assert host == HostDriver("libcuda", cuda_api=api)
    code, message = check(host, IMAGE_131)
    assert (code == EXIT_DRIVER_TOO_OLD) is refused
    if refused:
        assert "supports CUDA 12.8" in message and "CUDA >= 13.0" in message


def test_nvidia_smi_wins_over_proc_and_libcuda() -> None:
    host = host_from({"nvidia-smi": "nvidia-smi-570.txt", "proc": "proc-version-580.txt"}, api=13000)
    assert host == HostDriver("nvidia-smi", version="570.133.20")


def test_image_without_a_floor_is_not_gated() -> None:
    assert check(host_from({"nvidia-smi": "nvidia-smi-570.txt"}), {}) == (0, "")


@pytest.mark.parametrize(("argv", "cmd"), [
    ([], ["vllm", "serve"]),
    (["--model", "m", "--port", "8000"], ["vllm", "serve", "--model", "m", "--port", "8000"]),
    (["vllm", "serve", "m"], ["vllm", "serve", "m"]),
    (["python", "-c", "print(1)"], ["python", "-c", "print(1)"]),
])
def test_default_command_is_vllm_serve(argv: list[str], cmd: list[str]) -> None:
    assert command(argv) == cmd
