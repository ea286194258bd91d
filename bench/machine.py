"""The machine a benchmark ran on, for its JSON report (numbers mean nothing without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def describe(**extra: object) -> dict[str, object]:
    """arch, CPU count and model, and the load average now (other work beside a run skews it)."""
    return {"arch": platform.machine(), "cpus": os.cpu_count(), "cpu": cpu_model(), **extra,
            "load_average_at_end": os.getloadavg()}
