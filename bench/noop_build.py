"""Benchmark: how long a no-op `wheelfactory build` and a `plan` take once everything is cached.

The target (issue: core) is "well under a second of work beyond Python start-up". This builds
the NCCL stand-in once into a temporary wheelhouse, then times, over N runs each:
  python -c pass                          (interpreter start-up, the floor)
  python -c 'import wheelfactory.cli.app'     (start-up plus imports)
  wheelfactory plan  --release <ci>        (load recipes + release, key every step, read manifest)
  wheelfactory build --release <ci> nccl   (the same plus the lock and the cached check)
and prints medians as JSON with the machine they came from.

    python bench/noop_build.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "bench.toml"
        release.write_text(f"""[target]
python = "{sys.version_info.major}.{sys.version_info.minor}"
cuda = "13.0"
cuda_arch_list = ["12.1a"]
platform = "linux_x86_64"
[components.nccl]
version = "2.29.2-1"
source = {{ path = "{REPO / 'tests' / 'fixtures' / 'nccl-standin'}" }}
""")
        env = dict(os.environ, WHEELFACTORY_WHEELHOUSE=f"{tmp}/wh", WHEELFACTORY_CACHE_DIR=f"{tmp}/cache")
        wf = [sys.executable, "-m", "wheelfactory"]
        subprocess.run(wf + ["build", "-r", str(release), "nccl"], check=True, capture_output=True, env=env)
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_implementation()} "
                       f"{platform.python_version()}",
            "runs": args.runs,
            "python_startup_s": timed([sys.executable, "-c", "pass"], args.runs, env),
            "import_cli_s": timed([sys.executable, "-c", "import wheelfactory.cli.app"], args.runs, env),
            "plan_s": timed(wf + ["plan", "-r", str(release)], args.runs, env),
            "noop_build_s": timed(wf + ["build", "-r", str(release), "nccl"], args.runs, env),
        }
        result["noop_build_beyond_startup_s"] = result["noop_build_s"] - result["python_startup_s"]
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
