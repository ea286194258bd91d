"""Facts about the build host, read once: platform tag, CUDA toolkit, CPUs and memory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..core.errors import InputError


@dataclass(frozen=True)
class Host:
    platform: str  # wheel platform tag, e.g. linux_x86_64
    cuda_home: str | None
    toolkit: str  # nvcc release, e.g. "13.0", or "none"
    cpus: int
    mem_available_gb: float


def platform_tag() -> str:
    """The wheel platform tag of this interpreter's host (linux_x86_64, linux_aarch64)."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def find_cuda_home() -> str | None:
    """CUDA_HOME, else /usr/local/cuda, else the prefix of the nvcc on PATH."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and Path(candidate, "bin", "nvcc").exists():
            return candidate
    nvcc = shutil.which("nvcc")
    return str(Path(nvcc).resolve().parent.parent) if nvcc else None


def toolkit_version(cuda_home: str | None) -> str:
    """The nvcc release ('13.0') found under cuda_home, or 'none'."""
    if not cuda_home:
        return "none"
    try:
        out = subprocess.run([str(Path(cuda_home, "bin", "nvcc")), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "none"
    m = re.search(r"release (\d+\.\d+)", out)
    return m[1] if m else "none"


def mem_available_gb() -> float:
    """MemAvailable from /proc/meminfo, in GiB (unified memory on a Spark counts GPU use too)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return 8.0


@cache
def detect_host() -> Host:
    """Read the host's facts (cached for the process)."""
    cuda_home = find_cuda_home()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Host(platform_tag(), cuda_home, toolkit_version(cuda_home), cpus, mem_available_gb())


def default_jobs(host: Host, mem_per_job_gb: float) -> int:
    """Parallel jobs: the CPU count, capped so that jobs x memory-per-job fits in available memory.

    The anchors' users ran 128 GB Sparks out of memory with -j$(nproc) during torch, triton and
    flashinfer builds; a per-recipe figure keeps the default safe.
    """
    by_mem = int(host.mem_available_gb // max(mem_per_job_gb, 0.1))
    return max(1, min(host.cpus, by_mem))


# More compile jobs than this many per CPU only thrash (and each needs GBs of memory): a typo such
# as --jobs 1000000 is refused up front instead of forking until the machine stops answering.
JOBS_PER_CPU = 4


def check_jobs(jobs: int | None, cpus: int | None = None) -> None:
    """InputError (exit 2) for a --jobs above JOBS_PER_CPU x the CPU count."""
    cpus = cpus or os.cpu_count() or 1
    if jobs is not None and jobs > JOBS_PER_CPU * cpus:
        raise InputError(f"--jobs {jobs}: more than {JOBS_PER_CPU} x the {cpus} CPUs of this machine; "
                         f"use at most --jobs {JOBS_PER_CPU * cpus} (or leave it out for a memory-aware default)")
