"""The aarch64 CI chain on the emulated aarch64 machine, per step: prints JSON with the machine.

Runs .ci/arm64-chain.sh (tests/releases/ci-arm64.toml) in local/debian-py-arm64:bookworm under qemu
(build phase with the network, install phase without), then the release's arm64 image on this host
(`wheelfactory images`, RUN steps under emulation, closure check) and the emulated smoke import.
Needs .ci/docker-engine.sh and .ci/arm64-env.sh first.

    python3 bench/arm64_emulated.py [--wf DIR] [--toolkits DIR]

--wf keeps the chain's wheelhouse and cache (a second run then times the cached chain);
--toolkits reuses aarch64 toolkit wheels already downloaded (the fetch step then downloads less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = "local/debian-py-arm64:bookworm"
IMAGE = "wheelfactory-ci/vllm-arm64:0.14.1"
DOCKER = "/usr/bin/docker"


def chain(wf: Path, toolkits: Path | None, phase: str, network: str) -> float:
    """Run one phase of .ci/arm64-chain.sh in an arm64 container; its wall seconds."""
    mounts = ["-v", f"{REPO}:/src:ro", "-v", f"{wf}:/wf"]
    mounts += ["-v", f"{toolkits}:/toolkits", "-e", "WHEELFACTORY_TOOLKITS_DIR=/toolkits"] if toolkits else \
        ["-e", "WHEELFACTORY_TOOLKITS_DIR=/wf/toolkits"]
    started = time.monotonic()
    subprocess.run([DOCKER, "run", "--rm", "--platform=linux/arm64", f"--network={network}", *mounts, BASE,
                    "bash", "/src/.ci/arm64-chain.sh", phase], check=True)
    return time.monotonic() - started


def steps(wf: Path) -> dict[str, float]:
    """timings.tsv of the chain: step -> seconds."""
    out = {}
    for line in (wf / "timings.tsv").read_text().splitlines():
        name, seconds, _rc = line.split("\t")
        out[name] = float(seconds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wf", type=Path, help="the chain's directory (default: a new temporary one)")
    ap.add_argument("--toolkits", type=Path, help="aarch64 toolkit wheels/roots to reuse")
    args = ap.parse_args()
    wf = (args.wf or Path(tempfile.mkdtemp(prefix="arm64-bench-"))).absolute()
    wf.mkdir(parents=True, exist_ok=True)
    build_s = chain(wf, args.toolkits, "build", "host")
    timings = steps(wf)
    install_s = chain(wf, args.toolkits, "install", "none")
    timings |= {k: v for k, v in steps(wf).items() if k in ("venv", "import")}
    out = wf / "images"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "wheelfactory", "--wheelhouse", str(wf / "wheelhouse"), "--cache-dir",
                    str(wf / "host-cache"), "images", "-r", str(REPO / "tests/releases/ci-arm64.toml"),
                    "--output-dir", str(out)], check=True, cwd=REPO)
    timings["image (build + closure + size report, on the x86_64 host)"] = time.monotonic() - started
    started = time.monotonic()
    subprocess.run([DOCKER, "run", "--rm", "--platform=linux/arm64", "--network=none", IMAGE, "python", "-c",
                    "import vllm, torch, flashinfer"], check=True)
    timings["image smoke import (emulated)"] = time.monotonic() - started
    size = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Size}}", IMAGE], capture_output=True, text=True,
                          check=True).stdout.strip()
    print(json.dumps({
        "machine": {"host": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "emulation": "qemu-user-static (binfmt F flag), Docker 20.10 --platform linux/arm64"},
        "build_phase_s": round(build_s, 1), "install_phase_s": round(install_s, 1),
        "steps_s": {k: round(v, 1) for k, v in timings.items()}, "image_bytes": int(size),
    }, indent=2))


if __name__ == "__main__":
    main()
