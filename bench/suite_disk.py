"""Peak disk use of the test suite: its temporary files, sampled while it runs.

CI's machine shares a disk whose free space varies from run to run (4 GB free has been seen in the
middle of a run), so what the suite itself needs at its peak is worth knowing and keeping down.

    python bench/suite_disk.py [--interval 10] [-- PYTEST ARGS...]

runs `python -m pytest --basetemp=<fresh dir> ARGS` (all tests by default) and samples the size of
that directory with `du` (hard links counted once, as they use the disk) every --interval seconds.
Docker's images and build cache live elsewhere (`docker system df` before and after is printed).
Prints JSON: the peak, when it came, the pytest exit code and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else 0


def docker_df() -> str | None:
    if shutil.which("docker") is None:
        return None
    r = subprocess.run(["docker", "system", "df"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="suite-disk-"))
    docker_before = docker_df()
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", f"--basetemp={base / 'tmp'}", *args.pytest_args])
    peak, peak_at, samples = 0, 0.0, 0
    while proc.poll() is None:
        time.sleep(args.interval)
        size = du_mb(base)
        samples += 1
        if size > peak:
            peak, peak_at = size, time.monotonic() - start
    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({
        "peak_mb": peak, "peak_at_s": round(peak_at), "samples": samples, "interval_s": args.interval,
        "pytest_exit": proc.returncode, "wall_s": round(time.monotonic() - start),
        "docker_before": docker_before, "docker_after": docker_df(),
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }, indent=2))


if __name__ == "__main__":
    main()
