"""The image's NCCL over InfiniBand/RoCE, checked in the image (imagefiles/nccl_net_check.py).

NCCL sets up its network transports only for a communicator on a GPU, so the NCCL half of the
check runs only where the build host has one (the container gets `--gpus all`); elsewhere the
smoke test says it was skipped and why. rdma-core's dlopen half runs everywhere (check_rdma).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

SCRIPT = "nccl_net_check.py"


def host_gpu(which: Callable[[str], str | None] = shutil.which,
             run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> tuple[bool, str]:
    """(whether the host has an NVIDIA GPU a container can be given, why not)."""
    smi = which("nvidia-smi")
    if smi is None:
        return False, "the host has no nvidia-smi (no NVIDIA driver)"
    try:
        r = run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"nvidia-smi -L failed: {e}"
    if r.returncode != 0 or not any(line.startswith("GPU ") for line in r.stdout.splitlines()):
        return False, f"nvidia-smi -L lists no GPU (exit {r.returncode})"
    return True, ""


def parse_result(returncode: int, stdout: str, stderr: str) -> dict:
    """The check's JSON report (its stdout's last line), or a failure saying why it did not run."""
    try:
        report = json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"ok": False, "error": f"the check did not run (exit {returncode}): {stderr.strip()[-2000:]}"}
    if not isinstance(report, dict):
        return {"ok": False, "error": f"the check printed no report (exit {returncode})"}
    return report


def describe(report: dict) -> str:
    """One line for the smoke test's output."""
    if "error" in report and "nccl" not in report:
        return f"FAILED: {report['error']}"
    nccl = report.get("nccl") or {}
    rdma = report.get("rdma") or {}
    if not rdma.get("ok", False):
        return f"FAILED: rdma-core: {rdma.get('error')}"
    if "skipped" in nccl:
        return f"rdma-core loads; NCCL skipped: {nccl['skipped']}"
    verdict = f"{nccl.get('verdict')} ({nccl.get('meaning')})"
    where = f"NCCL {nccl.get('nccl_version')}, network {nccl.get('network')}"
    return f"{'' if report.get('ok') else 'FAILED: '}{verdict}; {where}; line: {nccl.get('line')}"
