#!/usr/bin/env python3
"""Every GPU check of tests/gpu in one command, with a summary and one exit status.

Meant for a DGX Spark owner inside a factory image (or venv) on their Spark:

    docker run --rm --gpus all -v "$PWD":/src -w /src IMAGE python tests/gpu/run_all.py --out /src/gpu-checks

Each check runs in its own process (a crash or hang in one does not hide the others), with its
output kept in OUT/<check>.log and its report in OUT/<check>.json where the script writes one:

  triton-run      Triton kernels (add, softmax, tl.dot matmul) on this GPU vs fp32 PyTorch
  triton-aot      the same kernels compiled ahead of time for the GB10 (sm_121a), no GB10 needed
  flashinfer      FlashInfer JIT: RMSNorm, single decode and single causal prefill vs fp32 PyTorch
                  (needs CUDA_HOME: the images set it to their toolkit wheels)
  nccl-net        rdma-core loads (libibverbs, mlx5) and NCCL finds its IB plugin
  vllm-ops        vLLM's custom ops (norms, activation, rotary, caches, paged attention, fp8 quant)
  vllm-generate   a dummy-weight LLaMA-architecture model generating, eager and CUDA graphs

A check whose package is missing, or that needs a GPU where there is none, is skipped with the
reason. Exit status: 0 when every check that ran passed, 1 when any failed, 2 when none ran (or
an unknown check was named). `--only`/`--skip` take comma-separated names.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the image carries the NCCL check at /opt/wheelfactory; a checkout at assemble/imagefiles
NCCL_CHECK = next((p for p in (HERE.parent.parent / "assemble" / "imagefiles" / "nccl_net_check.py",
                               Path("/opt/wheelfactory/nccl_net_check.py")) if p.is_file()),
                  HERE.parent.parent / "assemble" / "imagefiles" / "nccl_net_check.py")

EXIT_OK, EXIT_FAILED, EXIT_NOTHING_RAN = 0, 1, 2


@dataclass(frozen=True)
class Check:
    name: str
    argv: tuple[str, ...]  # after the interpreter; "{json}" is replaced by the report's path
    modules: tuple[str, ...] = ()  # importable packages the check needs
    gpu: bool = True  # needs a CUDA device
    env: tuple[str, ...] = ()  # environment variables the check needs
    timeout: float = 900
    about: str = ""


CHECKS: tuple[Check, ...] = (
    Check("triton-run", (str(HERE / "triton_kernels.py"), "run", "--json", "{json}"), ("triton", "torch"),
          about="Triton kernels on this GPU"),
    Check("triton-aot", (str(HERE / "triton_kernels.py"), "aot", "--target", "cuda:121", "--json", "{json}"),
          ("triton",), gpu=False, about="Triton ahead of time for sm_121a"),
    Check("flashinfer", (str(HERE / "flashinfer_jit.py"), "check", "--json", "{json}"),
          ("flashinfer", "torch"), env=("CUDA_HOME",), timeout=1800, about="FlashInfer JIT norm/decode/prefill"),
    Check("nccl-net", (str(NCCL_CHECK), "--require-gpu", "--log", "{log}"), about="NCCL's IB plugin and rdma-core"),
    Check("vllm-ops", (str(HERE / "vllm_ops.py"), "--json", "{json}"), ("vllm", "torch"), about="vLLM custom ops"),
    Check("vllm-generate", (str(HERE / "vllm_generate.py"), "--json", "{json}"), ("vllm", "torch"), timeout=1800,
          about="dummy-weight generation"),
)


@dataclass
class Outcome:
    name: str
    status: str  # pass | fail | skip
    reason: str = ""
    seconds: float = 0.0
    exit: int | None = None
    log: str | None = None
    report: dict | None = field(default=None, repr=False)


def gpu_present() -> tuple[bool, str]:
    """Whether a CUDA device is visible, through the driver API (no PyTorch needed)."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no CUDA driver (libcuda.so.1 does not load; in a container: --gpus all)"
    n = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value == 0:
        return False, "the CUDA driver sees no GPU"
    return True, ""


def skip_reason(check: Check, have_gpu: tuple[bool, str], importable: Callable[[str], bool],
                environ: dict[str, str]) -> str | None:
    """Why `check` cannot run here, or None."""
    missing = [m for m in check.modules if not importable(m)]
    if missing:
        return f"{', '.join(missing)} not installed"
    unset = [v for v in check.env if not environ.get(v)]
    if unset:
        return f"{', '.join(unset)} not set"
    if check.gpu and not have_gpu[0]:
        return have_gpu[1]
    return None


def select(checks: Sequence[Check], only: str | None, skip: str | None) -> list[Check]:
    """The checks named by --only (all by default) minus --skip; ValueError naming an unknown name."""
    known = [c.name for c in checks]
    wanted = [n for n in (only or "").split(",") if n] or known
    dropped = [n for n in (skip or "").split(",") if n]
    unknown = [n for n in wanted + dropped if n not in known]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in checks if c.name in wanted and c.name not in dropped]


def _subprocess(argv: list[str], log: Path, timeout: float) -> int:
    with open(log, "w", encoding="utf-8") as f:
        try:
            return subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\nrun_all.py: timed out after {timeout:.0f}s\n")
            return 124


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_checks(checks: Sequence[Check], out: Path, have_gpu: tuple[bool, str], importable: Callable[[str], bool],
               environ: dict[str, str], execute: Callable[[list[str], Path, float], int] = _subprocess,
               python: str = sys.executable, echo: Callable[[str], None] = print) -> list[Outcome]:
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for check in checks:
        reason = skip_reason(check, have_gpu, importable, environ)
        if reason:
            outcomes.append(Outcome(check.name, "skip", reason))
            echo(f"SKIP {check.name}: {reason}")
            continue
        log, report = out / f"{check.name}.log", out / f"{check.name}.json"
        argv = [python] + [a.replace("{json}", str(report)).replace("{log}", str(out / f"{check.name}.nccl.log"))
                           for a in check.argv]
        echo(f"RUN  {check.name}: {check.about}")
        started = time.monotonic()
        code = execute(argv, log, check.timeout)
        seconds = time.monotonic() - started
        data = None
        if report.is_file():
            try:
                data = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                data = None
        status = "pass" if code == 0 else "fail"
        why = "" if code == 0 else f"exit {code}: {_last_line(log)}"
        outcomes.append(Outcome(check.name, status, why, seconds, code, str(log), data))
        echo(f"{status.upper():4} {check.name} ({seconds:.1f}s){': ' + why if why else ''}")
    return outcomes


def exit_status(outcomes: Sequence[Outcome]) -> int:
    ran = [o for o in outcomes if o.status != "skip"]
    if not ran:
        return EXIT_NOTHING_RAN
    return EXIT_FAILED if any(o.status == "fail" for o in ran) else EXIT_OK


def summary(outcomes: Sequence[Outcome]) -> list[str]:
    width = max((len(o.name) for o in outcomes), default=5)
    lines = ["== summary =="]
    for o in outcomes:
        took = f"{o.seconds:7.1f}s" if o.status != "skip" else " " * 8
        lines.append(f"{o.name:<{width}}  {o.status.upper():4}  {took}  {o.reason}".rstrip())
    counts = {s: sum(o.status == s for o in outcomes) for s in ("pass", "fail", "skip")}
    verdict = {EXIT_OK: "OK", EXIT_FAILED: "FAILED", EXIT_NOTHING_RAN: "NOTHING RAN"}[exit_status(outcomes)]
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped: {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu-checks"), help="folder of the logs and reports")
    ap.add_argument("--only", help="comma-separated checks to run (default: all)")
    ap.add_argument("--skip", help="comma-separated checks to leave out")
    args = ap.parse_args(argv)
    try:
        checks = select(CHECKS, args.only, args.skip)
    except ValueError as e:
        ap.error(str(e))  # exit 2, with the usage
    outcomes = run_checks(checks, args.out, gpu_present(), lambda m: importlib.util.find_spec(m) is not None,
                          dict(os.environ))
    for line in summary(outcomes):
        print(line)
    (args.out / "summary.json").write_text(json.dumps(
        {"exit": exit_status(outcomes), "checks": [{k: v for k, v in o.__dict__.items() if k != "report"}
                                                   for o in outcomes]}, indent=1) + "\n")
    return exit_status(outcomes)


if __name__ == "__main__":
    sys.exit(main())
