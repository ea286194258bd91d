#!/usr/bin/env python3
"""FlashInfer's JIT, from the factory's flashinfer-python wheel, with the CUDA toolkit root that
NVIDIA's wheels lay out (site-packages/nvidia/cu13), as the runtime images set CUDA_HOME.

Not a pytest module (it needs a GPU): run it on a GPU machine, from a prepared carry directory
(tests/gpu/README.md). It installs nothing. Subcommands:

  link-dists ROOT DIST...  link the files of installed distributions (by their RECORD) into
                           ROOT, e.g. nvidia-cublas and nvidia-curand, which the image installs
                           into the same nvidia/cu13 root and whose headers FlashInfer includes
  probe                    JIT-build FlashInfer's norm module only, in a scratch workspace; exit
                           0 when it builds, 1 with the compiler's or linker's complaint
  check [--json PATH]      JIT-build and run RMSNorm (fp16, bf16), single-request decode
                           attention (fp16, MHA and GQA, head_dim 64 and 128) and single-request
                           causal prefill (fp16, MHA and GQA) against PyTorch references; exit 1
                           when any check fails

`probe` and `check` refuse to run unless CUDA_HOME is set and nothing else in the environment
points at another CUDA toolkit: PATH, LD_LIBRARY_PATH, LIBRARY_PATH and the include paths are
cleaned of such entries (re-executing when LD_LIBRARY_PATH changes), the compiler used is
$CUDA_HOME/bin/nvcc, and every header the JIT compiled against is checked to come from outside
any other toolkit (nvcc's dependency files).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Where other CUDA toolkits live: /usr/local/cuda, /usr/local/cuda-13.0, /opt/cuda, .../targets/x86_64-linux.
FOREIGN = re.compile(r"^/usr/local/cuda|^/opt/cuda|/cuda-\d+(\.\d+)?(/|$)|/targets/[^/]+-linux(/|$)")
KEY_HEADERS = ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h", "cublasLt.h", "curand_kernel.h", "cuda/std/cstdint")
SEARCH_VARS = ("PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH")


def _foreign_toolkit(entry: str, home: Path) -> bool:
    """A search-path entry that belongs to a CUDA toolkit other than `home`."""
    p = entry.rstrip("/")
    if not p:
        return False
    if p == str(home) or p.startswith(str(home) + "/"):
        return False
    return bool(FOREIGN.search(p))


def clean_environment() -> Path:
    """CUDA_HOME's toolkit first on PATH, every other toolkit out of the search paths."""
    home_s = os.environ.get("CUDA_HOME")
    if not home_s:
        sys.exit("CUDA_HOME is not set: point it at site-packages/nvidia/cu13 of the unpacked toolkit wheels")
    home = Path(home_s).resolve()
    if not (home / "bin" / "nvcc").is_file():
        sys.exit(f"CUDA_HOME={home} has no bin/nvcc")
    env = dict(os.environ)
    env["CUDA_HOME"] = str(home)
    env.pop("CUDA_PATH", None)
    env.pop("CUDA_ROOT", None)
    env.pop("CUDACXX", None)
    env.pop("FLASHINFER_NVCC", None)
    for var in SEARCH_VARS:
        kept = [e for e in env.get(var, "").split(":") if e and not _foreign_toolkit(e, home)]
        if var == "PATH":
            kept = [str(home / "bin")] + [e for e in kept if e != str(home / "bin")]
        if kept:
            env[var] = ":".join(kept)
        else:
            env.pop(var, None)
    if env.get("LD_LIBRARY_PATH") != os.environ.get("LD_LIBRARY_PATH") and not os.environ.get("_FI_JIT_REEXEC"):
        env["_FI_JIT_REEXEC"] = "1"
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ.clear()
    os.environ.update(env)
    return home


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({cmd[0]}: {e})"


def toolchain_report(home: Path) -> dict:
    nvcc = shutil.which("nvcc")
    version = _run([nvcc or "nvcc", "--version"])
    release = re.search(r"release (\d+\.\d+), V([\d.]+)", version)
    info = {
        "cuda_home": str(home),
        "which_nvcc": nvcc,
        "nvcc_is_cuda_home": bool(nvcc) and Path(nvcc).resolve() == (home / "bin" / "nvcc").resolve(),
        "nvcc_version": release.group(2) if release else version,
        "host_cxx": _run(["c++", "--version"]).splitlines()[0] if shutil.which("c++") else None,
        "libcuda_for_linker": _run(["c++", "-print-file-name=libcuda.so"]),
        "cuda_home_lib": sorted(p.name for p in (home / "lib").iterdir()) if (home / "lib").is_dir() else [],
        "cuda_home_lib64": (os.readlink(home / "lib64") if (home / "lib64").is_symlink()
                            else ("dir" if (home / "lib64").is_dir() else None)),
    }
    for var in SEARCH_VARS:
        info[var] = os.environ.get(var, "")
    return info


def set_workspace(base: Path) -> None:
    """A fresh FlashInfer workspace: nothing compiled earlier can be picked up."""
    os.environ["FLASHINFER_WORKSPACE_BASE"] = str(base)
    os.environ.pop("FLASHINFER_DISABLE_JIT", None)
    os.environ.pop("FLASHINFER_JIT_VERBOSE", None)


def assert_jit_only() -> dict:
    """No AOT package, no prebuilt kernels in the wheel: every kernel used must be JIT-compiled."""
    import importlib.util

    import flashinfer
    from flashinfer.jit import env as jit_env

    found = {m: importlib.util.find_spec(m) is not None for m in ("flashinfer_jit_cache", "flashinfer_cubin")}
    if any(found.values()):
        sys.exit(f"an AOT package is importable ({found}): this check needs the JIT path alone")
    aot = Path(jit_env.FLASHINFER_AOT_DIR)
    if aot.exists() and any(aot.iterdir()):
        sys.exit(f"{aot} holds prebuilt modules: this check needs the JIT path alone")
    return {"flashinfer": flashinfer.__version__, "flashinfer_file": flashinfer.__file__,
            "workspace": str(jit_env.FLASHINFER_WORKSPACE_DIR), "aot_dir": str(aot), **found}


def compiled_headers(jit_dir: Path) -> set[str]:
    """Every file the JIT builds compiled against: nvcc's dependency output, which ninja keeps in
    each module's .ninja_deps (`ninja -t deps`), and any .d file left behind."""
    files = set()
    for ninja in jit_dir.glob("*/build.ninja"):
        for line in _run(["ninja", "-C", str(ninja.parent), "-t", "deps"]).splitlines():
            if line.startswith(" ") and line.strip().startswith("/"):
                files.add(line.strip())
    for dep in jit_dir.rglob("*.d"):
        for token in dep.read_text(errors="replace").replace("\\\n", " ").split():
            if not token.endswith(":") and token.startswith("/"):
                files.add(token)
    return files


def headers_outside_root(files: set[str], home: Path) -> list[str]:
    """Those files that lie in another CUDA toolkit (by their path or where their links lead)."""
    return sorted(f for f in files if _foreign_toolkit(f, home) or _foreign_toolkit(str(Path(f).resolve()), home))


def key_headers(files: set[str]) -> dict[str, str]:
    """Where the toolkit headers that identify a CUDA installation came from."""
    out = {}
    for name in KEY_HEADERS:
        hits = sorted(f for f in files if f.endswith("/" + name))
        if hits:
            out[name] = hits[0] + (f" -> {Path(hits[0]).resolve()}" if Path(hits[0]).is_symlink() else "")
    return out


def cmd_link_dists(args) -> int:
    from importlib import metadata

    root = Path(args.root)
    for name in args.dists:
        dist = metadata.distribution(name)
        n = 0
        for f in dist.files or ():
            parts = Path(f).parts
            if parts[0].endswith((".dist-info", ".data")) or parts[0] == ".." or f.suffix == ".pyc":
                continue
            src = Path(dist.locate_file(f)).resolve()
            dst = root / f
            if dst.exists() or dst.is_symlink():
                continue  # what the carried wheels installed wins
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
            n += 1
        print(f"linked {n} files of {dist.metadata['Name']} {dist.version} ({dist.locate_file('')}) into {root}")
    return 0


def cmd_probe(args) -> int:
    home = clean_environment()
    set_workspace(Path(tempfile.mkdtemp(prefix="fi-probe-")))
    print(json.dumps(toolchain_report(home), indent=1))
    print(json.dumps(assert_jit_only(), indent=1))
    from flashinfer.jit.norm import gen_norm_module

    spec = gen_norm_module()
    t = time.perf_counter()
    try:
        spec.build(verbose=False)
    except Exception as e:  # noqa: BLE001 - report the toolchain's complaint
        lines = [ln for ln in str(e).splitlines()
                 if re.search(r"error|cannot find|No such file|undefined reference", ln) and "-isystem" not in ln]
        print(f"PROBE FAIL after {time.perf_counter() - t:.1f}s:")
        print("\n".join(lines[:20]))
        return 1
    print(f"PROBE OK: built {spec.name} in {time.perf_counter() - t:.1f}s")
    return 0


def _close(out, ref, atol: float, rtol: float):
    import torch

    diff = (out.float() - ref.float()).abs()
    ok = bool((diff <= atol + rtol * ref.float().abs()).all()) and bool(torch.isfinite(out.float()).all())
    return ok, float(diff.max())


def _time(fn, reps: int = 50) -> float:
    """Median milliseconds of `fn` over `reps` CUDA-event-timed calls (after the first call)."""
    import torch

    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def _first_call(fn):
    """(result, wall seconds) of a call that may JIT-compile, loading included."""
    import torch

    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def rmsnorm_ref(x, w, eps):
    import torch

    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def decode_ref(q, k, v):
    """softmax(q k^T / sqrt(d)) v in fp32; q [H, D], k/v [L, Hkv, D] (NHD); GQA by repeating kv heads."""
    import torch

    heads, dim = q.shape
    group = heads // k.shape[1]
    kf = k.float().repeat_interleave(group, dim=1)  # [L, H, D]
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("hd,lhd->hl", q.float(), kf) / dim ** 0.5
    return torch.einsum("hl,lhd->hd", torch.softmax(scores, dim=-1), vf).to(q.dtype)


def prefill_ref(q, k, v):
    """Causal attention in fp32; q [Lq, H, D], k/v [Lkv, Hkv, D] (NHD). FlashInfer aligns the causal mask
    bottom-right: query i (of Lq) sees keys j <= i + Lkv - Lq, the last query every key."""
    import torch

    qo_len, heads, dim = q.shape
    kv_len = k.shape[0]
    group = heads // k.shape[1]
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), kf) / dim ** 0.5
    i = torch.arange(qo_len, device=q.device)[:, None]
    j = torch.arange(kv_len, device=q.device)[None, :]
    scores = scores.masked_fill(j > i + kv_len - qo_len, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), vf).to(q.dtype)


def cmd_check(args) -> int:
    home = clean_environment()
    work = Path(args.workspace or tempfile.mkdtemp(prefix="fi-jit-"))
    set_workspace(work)
    import flashinfer
    import torch
    from flashinfer.jit import env as jit_env

    tool = toolchain_report(home)
    meta = assert_jit_only()
    meta["tvm_ffi"] = __import__("tvm_ffi").__version__
    gpu = torch.cuda.get_device_name(0)
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"])
    meta |= {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpu": gpu, "nvidia_smi": smi,
             "capability": "{}.{}".format(*torch.cuda.get_device_capability(0)), "python": sys.version.split()[0]}
    print("== toolchain ==")
    for k, v in tool.items():
        print(f"  {k}: {v}")
    print("== packages / machine ==")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    if not tool["nvcc_is_cuda_home"]:
        print(f"FAIL: nvcc on PATH is {tool['which_nvcc']}, not {home}/bin/nvcc")
        return 1

    torch.manual_seed(0)
    dev = args.device
    results = []

    def record(kind, case, ok, err, tol, first_s, run_ms, compiled):
        row = {"check": kind, "case": case, "ok": ok, "max_abs_err": err, "tol": tol,
               "first_call_s": round(first_s, 3), "run_ms": round(run_ms, 4), "jit_compiled_here": compiled}
        results.append(row)
        print(f"  {'PASS' if ok else 'FAIL'} {kind} {case}: max|err|={err:.3e} (atol=rtol={tol}) "
              f"first call {first_s:.2f}s{' (JIT compile+load)' if compiled else ''}, run {run_ms:.4f} ms")

    def built_modules() -> set[str]:
        return {p.parent.name for p in Path(jit_env.FLASHINFER_JIT_DIR).glob("*/*.so")}

    def check(kind, case, call, reference, tol):
        try:
            before = built_modules()
            out, first = _first_call(call)
            compiled = bool(built_modules() - before)
            ok, err = _close(out, reference(), tol, tol)
            run_ms = _time(call)
        except Exception as e:  # noqa: BLE001 - a failed check, reported as such
            print(f"  FAIL {kind} {case}: {type(e).__name__}: {str(e)[-3000:]}")
            results.append({"check": kind, "case": case, "ok": False, "error": str(e)[-3000:]})
            return
        record(kind, case, ok, err, tol, first, run_ms, compiled)

    print("== RMSNorm: flashinfer.norm.rmsnorm vs fp32 PyTorch ==")
    eps = 1e-6
    for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1e-2)):
        for rows, hidden in ((1, 4096), (7, 5120), (128, 8192)):
            x = torch.randn(rows, hidden, dtype=dtype, device=dev)
            w = torch.randn(hidden, dtype=dtype, device=dev)

            def call(x=x, w=w):
                return flashinfer.norm.rmsnorm(x, w, eps=eps)

            check("rmsnorm", f"{str(dtype)[6:]} x[{rows},{hidden}]", call, lambda x=x, w=w: rmsnorm_ref(x, w, eps), tol)

    print("== decode: flashinfer.decode.single_decode_with_kv_cache vs fp32 PyTorch attention ==")
    tol = 1e-2
    for heads, kv_heads, dim, kv_len in ((32, 32, 128, 4096), (32, 8, 128, 2048), (64, 8, 128, 8192),
                                         (24, 8, 128, 3001), (16, 16, 64, 1000), (32, 4, 64, 5000)):
        q = torch.randn(heads, dim, dtype=torch.float16, device=dev)
        k = torch.randn(kv_len, kv_heads, dim, dtype=torch.float16, device=dev)
        v = torch.randn(kv_len, kv_heads, dim, dtype=torch.float16, device=dev)

        def call(q=q, k=k, v=v):
            return flashinfer.decode.single_decode_with_kv_cache(q, k, v, kv_layout="NHD")

        check("decode", f"fp16 q[{heads},{dim}] kv[{kv_len},{kv_heads},{dim}] group {heads // kv_heads}", call,
              lambda q=q, k=k, v=v: decode_ref(q, k, v), tol)

    print("== prefill: flashinfer.prefill.single_prefill_with_kv_cache (causal) vs fp32 PyTorch attention ==")
    for qo_len, kv_len, heads, kv_heads, dim in ((128, 128, 32, 32, 128), (77, 1000, 32, 8, 128),
                                                 (512, 2048, 16, 4, 128), (200, 200, 16, 16, 64)):
        q = torch.randn(qo_len, heads, dim, dtype=torch.float16, device=dev)
        k = torch.randn(kv_len, kv_heads, dim, dtype=torch.float16, device=dev)
        v = torch.randn(kv_len, kv_heads, dim, dtype=torch.float16, device=dev)

        def call(q=q, k=k, v=v):
            return flashinfer.prefill.single_prefill_with_kv_cache(q, k, v, causal=True, kv_layout="NHD")

        check("prefill", f"fp16 causal q[{qo_len},{heads},{dim}] kv[{kv_len},{kv_heads},{dim}] "
              f"group {heads // kv_heads}", call, lambda q=q, k=k, v=v: prefill_ref(q, k, v), tol)

    jit_dir = Path(jit_env.FLASHINFER_JIT_DIR)
    loaded = sorted({ln.split()[-1] for ln in open("/proc/self/maps") if re.search(r"/libcud(a|art)\.so", ln)})
    print("== CUDA libraries loaded in this process ==")
    for lib in loaded:
        print("  " + lib)
    modules = sorted(built_modules())
    files = compiled_headers(jit_dir)
    foreign = headers_outside_root(files, home)
    keys = key_headers(files)
    ninja_lines = set()
    for ninja in jit_dir.glob("*/build.ninja"):
        ninja_lines |= {ln.strip() for ln in ninja.read_text().splitlines() if ln.startswith(("cuda_home", "nvcc ="))}
    print("== JIT modules built in", jit_dir, "==")
    for m in modules:
        so = jit_dir / m / f"{m}.so"
        dynamic = _run(["readelf", "-d", str(so)]).splitlines()
        needed = [ln.split("[")[1].rstrip("]") for ln in dynamic if "NEEDED" in ln]
        print(f"  {m}: {so.stat().st_size} bytes, NEEDED {needed}")
    print("  build.ninja:", sorted(ninja_lines))
    print(f"  {len(files)} files compiled against; toolkit headers came from:")
    for name, path in keys.items():
        print(f"    {name}: {path}")
    print("  headers from another CUDA toolkit:", foreign or "none")
    ok = all(r["ok"] for r in results) and not foreign and bool(modules)
    if not modules:
        print("FAIL: no module was JIT-compiled in the fresh workspace")
    if foreign:
        print("FAIL: the JIT compiled against headers outside CUDA_HOME")
    summary = {"toolchain": tool, "meta": meta, "results": results, "modules": modules, "foreign_headers": foreign,
               "key_headers": keys, "loaded": loaded, "ninja": sorted(ninja_lines), "ok": ok}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(f"== {sum(r['ok'] for r in results)}/{len(results)} checks passed; {'OK' if ok else 'FAILED'} ==")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("link-dists", help="link installed distributions' files into a root")
    p.add_argument("root")
    p.add_argument("dists", nargs="+")
    p.set_defaults(fn=cmd_link_dists)
    p = sub.add_parser("probe", help="JIT-build the norm module only")
    p.set_defaults(fn=cmd_probe)
    p = sub.add_parser("check", help="JIT-build and check RMSNorm and decode attention")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--workspace", help="FlashInfer workspace base (default: a fresh temporary directory)")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_check)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
