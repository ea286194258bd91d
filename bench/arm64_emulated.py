"""The aarch64 CI chain on the emulated aarch64 machine, per step: prints JSON with the machine.

Runs .ci/arm64-chain.sh (tests/releases/ci-arm64.toml) in local/debian-py-arm64:bookworm under qemu
(build phase with the network, install phase without), then the release's arm64 image on this host
(`wheelfactory images`, RUN steps under emulation, closure check) and the emulated smoke import.
Needs .ci/docker-engine.sh and .ci/arm64-env.sh first.

    python3 bench/arm64_emulated.py [--slice] [--wf DIR] [--toolkits DIR]

--slice measures CI's always-on slice instead (tests/data/arm64-slice/releases/ci-arm64-slice.toml:
the NCCL stand-in, a C-extension stand-in, two PyPI pins; tests/test_ci_chain_arm64_slice.py);

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
DOCKER = "/usr/bin/docker"
# (release, settings of .ci/arm64-chain.sh, image, the smoke import in it)
FULL = ("tests/releases/ci-arm64.toml", {}, "wheelfactory-ci/vllm-arm64:0.14.1-t4",
        "import vllm, torch, flashinfer")
SLICE = ("tests/data/arm64-slice/releases/ci-arm64-slice.toml",
         {"RELEASE": "tests/data/arm64-slice/releases/ci-arm64-slice.toml", "RECIPES_DIR": "tests/data/arm64-slice",
          "COMPONENTS": "nccl cext", "IMPORTS": "cext_standin markupsafe six"},
         "wheelfactory-ci/slice-arm64:0.1.0", "import cext_standin, markupsafe, six, nvidia.nccl")


def chain(wf: Path, toolkits: Path | None, phase: str, network: str, env: dict[str, str]) -> float:
    """Run one phase of .ci/arm64-chain.sh in an arm64 container; its wall seconds."""
    mounts = ["-v", f"{REPO}:/src:ro", "-v", f"{wf}:/wf", *(a for k, v in env.items() for a in ("-e", f"{k}={v}"))]
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
    ap.add_argument("--slice", action="store_true", help="CI's always-on slice instead of the full chain")
    args = ap.parse_args()
    release, env, image, smoke = SLICE if args.slice else FULL
    wf = (args.wf or Path(tempfile.mkdtemp(prefix="arm64-bench-"))).absolute()
    wf.mkdir(parents=True, exist_ok=True)
    build_s = chain(wf, args.toolkits, "build", "host", env)
    timings = steps(wf)
    install_s = chain(wf, args.toolkits, "install", "none", env)
    timings |= {k: v for k, v in steps(wf).items() if k in ("venv", "import")}
    out = wf / "images"
    started = time.monotonic()
    recipes = ["--recipes-dir", str(REPO / env["RECIPES_DIR"])] if "RECIPES_DIR" in env else []
    subprocess.run([sys.executable, "-m", "wheelfactory", *recipes, "--wheelhouse", str(wf / "wheelhouse"),
                    "--cache-dir", str(wf / "host-cache"), "images", "-r", str(REPO / release),
                    "--output-dir", str(out)], check=True, cwd=REPO)
    timings["image (build + closure + size report, on the x86_64 host)"] = time.monotonic() - started
    started = time.monotonic()
    subprocess.run([DOCKER, "run", "--rm", "--platform=linux/arm64", "--network=none", image, "python", "-c", smoke],
                   check=True)
    timings["image smoke import (emulated)"] = time.monotonic() - started
    size = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True,
                          check=True).stdout.strip()
    print(json.dumps({
        "machine": {"host": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "emulation": "qemu-user-static (binfmt F flag), Docker 20.10 --platform linux/arm64"},
        "release": release, "build_phase_s": round(build_s, 1), "install_phase_s": round(install_s, 1),
        "steps_s": {k: round(v, 1) for k, v in timings.items()}, "image_bytes": int(size),
    }, indent=2))


if __name__ == "__main__":
    main()
