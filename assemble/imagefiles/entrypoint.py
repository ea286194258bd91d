"""The image's entrypoint: check the host's NVIDIA driver against the image's CUDA, then start the command.

    docker run IMAGE                          -> vllm serve
    docker run IMAGE --model M --port 8000    -> vllm serve --model M --port 8000 (options only)
    docker run IMAGE vllm serve M             -> that command (any command: python, bash, ...)

The image's environment says what it needs (set by the assembler from wheelfactory's
data/cuda_drivers.toml): WHEELFACTORY_CUDA_VERSION, WHEELFACTORY_MIN_DRIVER,
WHEELFACTORY_MIN_CUDA_API, WHEELFACTORY_PTX_DRIVER. The host's driver is read from `nvidia-smi`,
else /proc/driver/nvidia/version, else libcuda's cuDriverGetVersion(). With none of them (no GPU,
a CI machine) the command starts without a word. A driver older than WHEELFACTORY_MIN_DRIVER
stops here with exit code 78 (EX_CONFIG) and a message; WHEELFACTORY_SKIP_DRIVER_CHECK=1 starts
anyway. Standard library only: it runs before anything else in the image.

CUDA's forward-compatibility libcuda (cuda-compat) is never put on the library path: it serves
data-center GPUs only, not GB10.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

EXIT_DRIVER_TOO_OLD = 78  # sysexits.h EX_CONFIG: the host's configuration cannot run this image
DEFAULT_COMMAND = ("vllm", "serve")


@dataclass(frozen=True)
class HostDriver:
    """What the host says about its driver: a version string and/or the CUDA API version it supports."""

    source: str  # nvidia-smi | /proc/driver/nvidia/version | libcuda
    version: str | None = None  # '580.95.05'
    cuda_api: int | None = None  # cuDriverGetVersion(): 13000 for CUDA 13.0


def parse_nvidia_smi(output: str) -> str | None:
    """The driver version from `nvidia-smi --query-gpu=driver_version --format=csv,noheader`
    (one line per GPU) or from nvidia-smi's banner ('Driver Version: 580.95.05')."""
    m = re.search(r"Driver Version:\s*(\d+(?:\.\d+)+)", output)
    if m:
        return m[1]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[0] if lines and re.fullmatch(r"\d+(?:\.\d+)+", lines[0]) else None


def parse_proc_version(text: str) -> str | None:
    """The driver version from /proc/driver/nvidia/version
    ('NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.95.05  Release Build ...')."""
    m = re.search(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return m[1] if m else None


def version_tuple(version: str) -> tuple[int, ...]:
    """'580.95.05' -> (580, 95, 5)."""
    return tuple(int(x) for x in version.split("."))


def cuda_api_name(value: int) -> str:
    """13010 -> '13.1'."""
    return f"{value // 1000}.{value % 1000 // 10}"


def probe_host(run: Callable[[Sequence[str]], str | None], read: Callable[[str], str | None],
               libcuda: Callable[[], int | None]) -> HostDriver | None:
    """The host's driver from the first source that answers; None when none does (no GPU)."""
    out = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out and (version := parse_nvidia_smi(out)):
        return HostDriver("nvidia-smi", version=version)
    text = read("/proc/driver/nvidia/version")
    if text and (version := parse_proc_version(text)):
        return HostDriver("/proc/driver/nvidia/version", version=version)
    api = libcuda()
    return HostDriver("libcuda", cuda_api=api) if api else None


def check(host: HostDriver | None, env: Mapping[str, str], image: str = "this image") -> tuple[int, str]:
    """(exit code, message) of the gate: 0 and '' when the host may run the image, 0 and a note when
    it runs it without PTX JIT, EXIT_DRIVER_TOO_OLD and the reason when it cannot."""
    cuda = env.get("WHEELFACTORY_CUDA_VERSION", "")
    minimum = env.get("WHEELFACTORY_MIN_DRIVER")
    if host is None or not minimum:
        return 0, ""
    skip = "set WHEELFACTORY_SKIP_DRIVER_CHECK=1 to start anyway"
    if host.version:
        have = version_tuple(host.version)
        if have < version_tuple(minimum):
            return EXIT_DRIVER_TOO_OLD, (
                f"{image} needs an NVIDIA driver >= {minimum} (its CUDA {cuda} toolkit; CUDA {cuda.split('.')[0]}.x "
                f"minor-version compatibility starts at {minimum}), but the host's driver is {host.version} "
                f"(read from {host.source}). Update the host's driver (DGX OS ships 580), or {skip}.")
        ptx = env.get("WHEELFACTORY_PTX_DRIVER")
        if ptx and have < version_tuple(ptx):
            return 0, (f"note: host driver {host.version} is older than CUDA {cuda}'s own driver ({ptx}): code runs "
                       f"as SASS, but PTX written by CUDA {cuda} cannot be JIT-compiled on this driver "
                       "(CUDA_ERROR_UNSUPPORTED_PTX_VERSION).")
        return 0, ""
    floor = int(env.get("WHEELFACTORY_MIN_CUDA_API") or 0)
    if host.cuda_api is not None and host.cuda_api < floor:
        return EXIT_DRIVER_TOO_OLD, (
            f"{image} needs an NVIDIA driver for CUDA >= {cuda_api_name(floor)} (driver >= {minimum}; its CUDA "
            f"{cuda} toolkit), but the host's driver supports CUDA {cuda_api_name(host.cuda_api)} "
            "(cuDriverGetVersion). "
            f"Update the host's driver (DGX OS ships 580), or {skip}.")
    return 0, ""


def command(argv: Sequence[str]) -> list[str]:
    """The command to start: `vllm serve` alone, before options only, or the command given."""
    if not argv:
        return list(DEFAULT_COMMAND)
    if argv[0].startswith("-"):
        return [*DEFAULT_COMMAND, *argv]
    return list(argv)


def _run(cmd: Sequence[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _libcuda() -> int | None:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    return version.value if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value else None


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Gate, then exec the command (returns only when the gate refuses or the command cannot start)."""
    if env.get("WHEELFACTORY_SKIP_DRIVER_CHECK", "") not in ("1", "true", "yes"):
        code, message = check(probe_host(_run, _read, _libcuda), env)
        if message:
            print(f"[driver check] {message}", file=sys.stderr, flush=True)
        if code:
            return code
    cmd = command(argv)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print(f"[entrypoint] cannot start {cmd[0]!r}: {e.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached: execvp replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
