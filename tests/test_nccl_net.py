"""NCCL over InfiniBand/RoCE: the verdict on NCCL's INFO logs (recorded on a GPU machine, see
tests/data/nccl/README.md), rdma-core's dlopen, and the image smoke test's use of the check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from assemble.assembler import Assembler
from assemble.imagefiles import nccl_net_check as check
from assemble.ncclnet import describe, host_gpu, parse_result
from assemble.spec import Settings
from wheelfactory.pipeline.factory import Factory

from .test_image_smoke import FakeDocker, prepared

LOGS = Path(__file__).resolve().parent / "data" / "nccl"


class GpuDocker(FakeDocker):
    """Remembers the options of each run too (where `--gpus all` goes)."""

    def __init__(self, stdout: str):
        super().__init__(stdout)
        self.options: list[list[str]] = []

    def run(self, ref: str, argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
        self.options.append(list(kw.get("options", ())))
        return super().run(ref, argv, **kw)


def test_classify_each_verdict_on_its_nccl_wording() -> None:
    assert check.classify("x NCCL INFO NET/IB : No device found.\n")["verdict"] == "ib-no-device"
    assert check.classify("NCCL INFO Failed to open libibverbs.so[.1]\n")["verdict"] == "ibverbs-missing"
    used = check.classify("NCCL INFO NET/IB : Using [0]mlx5_0:1/RoCE [RO]; OOB enp1s0f0np0:10.0.0.1<0>\n")
    assert used["verdict"] == "ib-device" and used["line"].startswith("NCCL INFO NET/IB : Using [0]mlx5_0")
    assert check.classify("NCCL WARN Net/IB : No device found\n")["verdict"] == "ib-no-device"
    assert check.classify("NCCL INFO NET/Socket : Using [0]eth0:10.0.0.2<0>\n")["verdict"] == "no-ib-log"


# NCCL 2.30.7-1 (the 0.33.0 release's) on a host without rdma-core, and with only libibverbs1's
# soname (no -dev symlink), as src/misc/ibvsymbols.cc and src/transport/net_ib/init.cc of that tag
# print them; 2.29.2-1 printed one line for both names.
NCCL_230_NO_RDMA = ("h:1:1 [0] NCCL INFO NCCL version 2.30.7+cuda13.1\n"
                    "h:1:1 [0] NCCL INFO Count not open libibverbs.so\n"
                    "h:1:1 [0] NCCL INFO Count not open libibverbs.so.1\n"
                    "h:1:1 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.2<0>\n")
NCCL_230_RDMA_NO_HCA = ("h:1:1 [0] NCCL INFO Count not open libibverbs.so\n"
                        "h:1:1 [0] NCCL INFO NET/IB : No device found.\n")


def test_recorded_logs_get_the_verdict_they_are_named_after() -> None:
    """Real NCCL_DEBUG=INFO logs from a GPU machine (tests/data/nccl/README.md), each named by the
    verdict it must give."""
    logs = sorted(LOGS.glob("*.log"))
    assert [p.stem for p in logs] == ["ib-no-device", "ibverbs-missing"]  # a new recording adds its file here
    for log in logs:
        got = check.classify(log.read_text())
        assert got["verdict"] == log.stem, log.name
    no_hca = check.classify((LOGS / "ib-no-device.log").read_text())
    # NCCL 2.28.9 with rdma-core and no HCA: "No device found.", then "Using [RO]" with no device;
    # it falls back to sockets, which is what the check must not call "uses InfiniBand"
    assert no_hca["line"] == "gpu-host:506:506 [0] NCCL INFO NET/IB : No device found."
    assert (no_hca["nccl_version"], no_hca["network"]) == ("2.28.9+cuda13.0", "Socket")
    assert check.classify("x NCCL INFO NET/IB : Using [RO]; OOB eth0:192.0.2.2<0>\n")["verdict"] == "no-ib-log"
    missing = check.classify((LOGS / "ibverbs-missing.log").read_text())
    assert missing["line"] == "gpu-host:493:493 [0] NCCL INFO Failed to open libibverbs.so[.1]"
    assert missing["network"] == "Socket"


def test_classify_nccl_230s_wording_per_name_of_libibverbs() -> None:
    missing = check.classify(NCCL_230_NO_RDMA)
    assert (missing["verdict"], missing["line"]) == ("ibverbs-missing", "h:1:1 [0] NCCL INFO Count not open "
                                                                        "libibverbs.so.1")
    assert missing["nccl_version"] == "2.30.7+cuda13.1"
    assert check.classify(NCCL_230_RDMA_NO_HCA)["verdict"] == "ib-no-device"
    # the unversioned name failing alone says nothing: runtime images have only the soname
    assert check.classify("h:1:1 [0] NCCL INFO Count not open libibverbs.so\n")["verdict"] == "no-ib-log"
    assert check.classify("NCCL INFO Could not open libibverbs.so.1\n")["verdict"] == "ibverbs-missing"
    assert check.classify("NCCL INFO Count not open libibverbs.so.10\n")["verdict"] == "no-ib-log"


def test_rdma_check_reports_a_missing_libibverbs(monkeypatch) -> None:
    def cdll(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")
    monkeypatch.setattr(check.ctypes, "CDLL", cdll)
    out = check.check_rdma()
    assert out["ok"] is False and "libibverbs.so.1 does not load" in out["error"]


def test_host_gpu_from_nvidia_smi() -> None:
    def run(listing: str, code: int = 0):
        return lambda argv, **kw: subprocess.CompletedProcess(argv, code, listing, "")
    have = host_gpu(lambda n: "/usr/bin/nvidia-smi", run("GPU 0: NVIDIA GB10 (UUID: GPU-1234)\n"))
    assert have == (True, "")
    assert host_gpu(lambda n: None)[0] is False
    none = host_gpu(lambda n: "/usr/bin/nvidia-smi", run("No devices were found\n", 6))
    assert none == (False, "nvidia-smi -L lists no GPU (exit 6)")


def test_smoke_test_runs_the_check_with_the_gpu_only_where_there_is_one(factory: Factory, tmp_path: Path) -> None:
    report = {"rdma": {"ok": True}, "nccl": {"verdict": "ib-no-device", "ok": True}, "ok": True}
    docker = GpuDocker("NCCL noise\n" + json.dumps(report) + "\n")
    asm = Assembler(factory, Settings(), tmp_path, docker)  # type: ignore[arg-type]
    assert asm.check_nccl_net(prepared(factory, None, False), (True, "")) is None  # no NCCL in the image
    assert asm.check_nccl_net(prepared(factory, None, True), (False, "no GPU here")) == {"skipped": "no GPU here"}
    assert docker.argv == []
    assert asm.check_nccl_net(prepared(factory, None, True), (True, "")) == report
    [argv] = docker.argv
    assert argv == ["python", "/opt/wheelfactory/nccl_net_check.py", "--require-gpu"]
    assert docker.options == [["--gpus", "all"]]


def test_a_check_that_printed_no_report_is_a_failure() -> None:
    result = parse_result(1, "", "python: can't open file '/opt/wheelfactory/nccl_net_check.py'")
    assert result["ok"] is False and "can't open file" in result["error"]
    assert describe(result).startswith("FAILED: the check did not run (exit 1)")
