"""Triton on this GPU and for the Spark: real kernels against PyTorch references, and ahead of time for sm_121a.

vLLM on a GB10 falls back to Triton attention and Triton MoE kernels, so a Triton that compiles
wrong code or cannot assemble for the GPU means vLLM does not serve. Two checks:

* `run`: three kernels of the shapes vLLM's Triton paths use (an elementwise op, a row softmax with
  a reduction, a blocked matmul with `tl.dot`) compiled for this machine's GPU and compared with
  fp32 PyTorch references; per check the shapes, max abs error, tolerance, first-call (compile +
  load) seconds and pass/fail.
* `aot`: the same kernels compiled ahead of time for a target given on the command line (default
  `cuda:121`, the GB10), no GPU of that kind needed: the PTX's `.target` and the cubin's ELF header
  (EM_CUDA, and the SM in its flags) say what was produced; which ptxas Triton ran is printed from the
  knobs it reads (TRITON_PTXAS_PATH, TRITON_PTXAS_BLACKWELL_PATH).

Usage: python triton_kernels.py run|aot [--target cuda:121] [--json OUT]. Exit 1 if any check fails.
Run on a GPU machine (`run`) or anywhere with Triton and a CUDA toolkit's ptxas (`aot`); not
collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


@triton.jit
def softmax_kernel(x_ptr, out_ptr, stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=-float("inf")).to(tl.float32)
    x = x - tl.max(x, axis=0)
    e = tl.exp(x)
    tl.store(out_ptr + row * stride + cols, (e / tl.sum(e, axis=0)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * sam + (k + rk)[None, :] * sak,
                    mask=(rm[:, None] < M) & ((k + rk)[None, :] < K), other=0.0)
        b = tl.load(b_ptr + (k + rk)[:, None] * sbk + rn[None, :] * sbn,
                    mask=((k + rk)[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc += tl.dot(a, b)
    tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_checks() -> list[dict]:
    """Each kernel on this GPU against an fp32 PyTorch reference."""
    import torch

    dev = torch.device("cuda")
    torch.manual_seed(0)
    results = []

    def record(name, shape, got, ref, tol, first_s):
        err = (got.float() - ref.float()).abs().max().item()
        results.append({"check": name, "shape": list(shape), "max_abs_err": err, "tol": tol,
                        "first_call_s": round(first_s, 3), "pass": bool(err <= tol)})

    n = 98_765  # not a multiple of the block: the mask matters
    x, y = torch.randn(n, device=dev), torch.randn(n, device=dev)
    out = torch.empty_like(x)
    _, s = _timed(lambda: (add_kernel[(triton.cdiv(n, 1024),)](x, y, out, n, BLOCK=1024), torch.cuda.synchronize()))
    record("add fp32", (n,), out, x + y, 0.0, s)

    rows, cols = 257, 1000
    for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)):
        a = torch.randn(rows, cols, device=dev, dtype=dtype)
        o = torch.empty_like(a)
        _, s = _timed(lambda a=a, o=o: (softmax_kernel[(rows,)](a, o, a.stride(0), cols, BLOCK=1024),
                                        torch.cuda.synchronize()))
        record(f"softmax {str(dtype).split('.')[-1]}", (rows, cols), o, torch.softmax(a.float(), dim=1), tol, s)

    M, N, K = 300, 260, 512
    grid = (triton.cdiv(M, 64), triton.cdiv(N, 64))
    for dtype, tol in ((torch.float16, 5e-2), (torch.bfloat16, 2.5e-1)):
        a = torch.randn(M, K, device=dev, dtype=dtype)
        b = torch.randn(K, N, device=dev, dtype=dtype)
        c = torch.empty(M, N, device=dev, dtype=dtype)
        _, s = _timed(lambda a=a, b=b, c=c: (matmul_kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1),
                                                                  b.stride(0), b.stride(1), c.stride(0), c.stride(1),
                                                                  BM=64, BN=64, BK=32), torch.cuda.synchronize()))
        record(f"matmul {str(dtype).split('.')[-1]}", (M, N, K), c, a.float() @ b.float(), tol, s)
    return results


EM_CUDA = 190


def cubin_sm(cubin: bytes) -> int | None:
    """The SM number a CUDA ELF is built for (low byte of e_flags), or None if it is not a CUDA ELF."""
    if cubin[:4] != b"\x7fELF" or struct.unpack_from("<H", cubin, 18)[0] != EM_CUDA:
        return None
    flags = struct.unpack_from("<I", cubin, 48 if cubin[4] == 2 else 36)[0]
    # CUDA ELF v2 (cubins for sm_100 and newer) keeps the SM in bits 8-15; v1 in the low byte.
    return (flags >> 8) & 0xFF if cubin[7] == 0x41 else flags & 0xFF


def aot_checks(target: str) -> list[dict]:
    """Each kernel compiled ahead of time for `target` (backend:capability), no launch."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    backend, cap = target.split(":")
    gpu = GPUTarget(backend, int(cap), 32)
    kernels = {
        "add": (add_kernel, {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
                {"BLOCK": 1024}),
        "softmax": (softmax_kernel, {"x_ptr": "*fp16", "out_ptr": "*fp16", "stride": "i32", "n_cols": "i32",
                                     "BLOCK": "constexpr"}, {"BLOCK": 1024}),
        "matmul": (matmul_kernel, {**{p: "*fp16" for p in ("a_ptr", "b_ptr", "c_ptr")},
                                   **{p: "i32" for p in ("M", "N", "K", "sam", "sak", "sbk", "sbn", "scm", "scn")},
                                   **{p: "constexpr" for p in ("BM", "BN", "BK")}}, {"BM": 64, "BN": 64, "BK": 32}),
    }
    results = []
    for name, (fn, signature, constexprs) in kernels.items():
        entry = {"check": f"aot {name}", "target": target}
        try:
            src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
            compiled, s = _timed(lambda src=src: triton.compile(src, target=gpu))
            ptx_target = next((ln.split()[1] for ln in compiled.asm["ptx"].splitlines()
                               if ln.startswith(".target")), None)
            entry.update(compile_s=round(s, 3), ptx_target=ptx_target, cubin_bytes=len(compiled.asm["cubin"]),
                         cubin_sm=cubin_sm(compiled.asm["cubin"]))
            entry["pass"] = entry["cubin_sm"] == int(cap) and bool(ptx_target) and ptx_target.startswith(f"sm_{cap}")
        except Exception as e:  # the error is the finding: which Triton cannot assemble for which SM
            entry.update({"pass": False, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:400]}"})
        results.append(entry)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("run", "aot"))
    ap.add_argument("--target", default="cuda:121")
    ap.add_argument("--json")
    args = ap.parse_args()
    knobs = {k: os.environ.get(k) for k in ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH", "CUDA_HOME")}
    results = run_checks() if args.what == "run" else aot_checks(args.target)
    report = {"triton": triton.__version__, "python": sys.version.split()[0], "knobs": knobs, "results": results}
    if args.what == "run":
        import torch
        report.update(torch=torch.__version__, gpu=torch.cuda.get_device_name(),
                      capability=list(torch.cuda.get_device_capability()))
    for r in results:
        print(("PASS " if r["pass"] else "FAIL ") + json.dumps(r))
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
