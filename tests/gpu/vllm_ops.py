#!/usr/bin/env python3
"""vLLM's own CUDA custom ops (vllm._C, vllm._C_cache_ops) against the PyTorch references of
vllm_refs.py, on random inputs, on a GPU.

Not a pytest module (it needs a GPU and a vLLM built with kernels): run it with the interpreter
whose site holds the vLLM wheel (tests/gpu/README.md, "vLLM"). It installs nothing. Checked, for
float16 and bfloat16 (float32 where the op supports it cheaply):

  rms_norm, fused_add_rms_norm       torch.ops._C, [tokens, hidden]
  silu_and_mul                       torch.ops._C, [tokens, 2 * d] -> [tokens, d]
  rotary_embedding                   torch.ops._C, NeoX and GPT-J style, full and partial rotary dim
  reshape_and_cache                  torch.ops._C_cache_ops, paged layout (exact)
  reshape_and_cache_flash            torch.ops._C_cache_ops, [blocks, block_size, heads, dim] (exact)
  paged_attention_v1, _v2            torch.ops._C, decode over caches written by reshape_and_cache,
                                     GQA, sequences up to 1500 tokens (v2: several 512 partitions)
  scaled_fp8_quant                   static per-tensor, dynamic per-tensor, dynamic per-token
                                     (with and without scale_ub), via vllm._custom_ops

Prints a table (op, dtype, shape, max abs error, tolerance, pass), the shared objects loaded and
the device's compute capability; --json PATH writes the same as JSON. Exit status 1 if any check
fails (or raises), 2 if there is no CUDA device or vLLM's kernels do not load.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_refs as R  # noqa: E402

HALF = (torch.float16, torch.bfloat16)
# atol, rtol per dtype for ops computed in float32 and rounded once or twice to the dtype
TOL = {torch.float16: (2e-2, 1e-2), torch.bfloat16: (6e-2, 2e-2), torch.float32: (1e-4, 1e-5)}
# attention accumulates over hundreds of tokens through half-precision softmax weights
ATTN_TOL = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (3e-2, 2e-2)}

RESULTS: list[dict] = []


def name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def record(op, dtype, shape, err, tol, ok, note=""):
    RESULTS.append(
        {"op": op, "dtype": name(dtype) if isinstance(dtype, torch.dtype) else dtype, "shape": shape,
         "max_abs_err": err, "tolerance": tol, "pass": bool(ok), "note": note}
    )


def check_close(op, dtype, shape, out, ref, atol, rtol, note=""):
    err = R.max_abs_err(out, ref)
    record(op, dtype, shape, err, f"{atol:g} + {rtol:g}*|ref|", R.within(out, ref, atol, rtol), note)


def run(op: str, dtype, shape: str, fn, *args) -> None:
    """Run one check, fn(*args); an exception is a failed row with the error as the note."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - every failure becomes a row
        traceback.print_exc()
        record(op, dtype, shape, float("nan"), "-", False, f"{type(e).__name__}: {e}"[:160])


# --- normalization, activation, rotary ----------------------------------------------------------


def _rms_norm(ops, x, w, eps, shape):
    out = torch.empty_like(x)
    ops.rms_norm(out, x, w, eps)
    check_close("rms_norm", x.dtype, shape, out, R.rms_norm(x, w, eps), *TOL[x.dtype])


def _fused_add_rms_norm(ops, x, res, w, eps, shape):
    ref_out, ref_res = R.fused_add_rms_norm(x, res, w, eps)
    xi, ri = x.clone(), res.clone()
    ops.fused_add_rms_norm(xi, ri, w, eps)  # in place: xi <- norm(x + res), ri <- x + res
    check_close("fused_add_rms_norm (out)", x.dtype, shape, xi, ref_out, *TOL[x.dtype])
    # the sum is one rounding to the dtype, whether added in the dtype or in float32
    atol, rtol = TOL[x.dtype]
    check_close("fused_add_rms_norm (residual)", x.dtype, shape, ri, ref_res, atol / 2, rtol / 2)


def check_norms(ops, dev):
    eps = 1e-6
    for dtype in (*HALF, torch.float32):
        for tokens, hidden in ((7, 1024), (129, 4096), (3, 5120)):
            shape = f"{tokens}x{hidden}"
            x = torch.randn(tokens, hidden, device=dev).to(dtype)
            res = torch.randn(tokens, hidden, device=dev).to(dtype)
            w = (1.0 + 0.1 * torch.randn(hidden, device=dev)).to(dtype)
            run("rms_norm", dtype, shape, _rms_norm, ops, x, w, eps, shape)
            run("fused_add_rms_norm", dtype, shape, _fused_add_rms_norm, ops, x, res, w, eps, shape)


def _silu_and_mul(ops, x, shape):
    out = torch.empty(x.shape[0], x.shape[1] // 2, device=x.device, dtype=x.dtype)
    ops.silu_and_mul(out, x)
    check_close("silu_and_mul", x.dtype, shape, out, R.silu_and_mul(x), *TOL[x.dtype])


def check_silu_and_mul(ops, dev):
    for dtype in (*HALF, torch.float32):
        for tokens, d in ((7, 1408), (64, 11008), (5, 100)):
            x = (2 * torch.randn(tokens, 2 * d, device=dev)).to(dtype)
            shape = f"{tokens}x{2 * d}"
            run("silu_and_mul", dtype, shape, _silu_and_mul, ops, x, shape)


def _rotary(ops, op, pos, q, k, head, cache, is_neox, shape):
    qi, ki = q.clone(), k.clone()
    ops.rotary_embedding(pos, qi, ki, head, cache, is_neox)  # in place on query and key
    # the reference rotates with the same (rounded) cache the kernel reads
    tol = TOL[q.dtype]
    check_close(op + " (q)", q.dtype, shape, qi, R.rotary_embedding(pos, q, head, cache, is_neox), *tol)
    check_close(op + " (k)", q.dtype, shape, ki, R.rotary_embedding(pos, k, head, cache, is_neox), *tol)


def check_rotary(ops, dev):
    cases = ((True, 128, 128), (False, 128, 128), (True, 128, 64), (False, 64, 64))  # (neox, head, rot)
    tokens, heads, kv_heads, max_pos = 97, 16, 4, 4096
    for dtype in (*HALF, torch.float32):
        for is_neox, head, rot in cases:
            cache = R.rope_cos_sin_cache(max_pos, rot).to(dev).to(dtype)  # the kernel reads it in q's dtype
            pos = torch.randint(0, max_pos, (tokens,), device=dev)
            q = torch.randn(tokens, heads * head, device=dev).to(dtype)
            k = torch.randn(tokens, kv_heads * head, device=dev).to(dtype)
            op = f"rotary_embedding {'neox' if is_neox else 'gptj'} rot={rot}"
            shape = f"q {tokens}x{heads}x{head}, k {tokens}x{kv_heads}x{head}"
            run(op, dtype, shape, _rotary, ops, op, pos, q, k, head, cache, is_neox, shape)


# --- KV cache write and paged attention ---------------------------------------------------------


def _paged_problem(dev, dtype, num_seqs, max_len, block_size, kv_heads, head):
    """Random sequences placed in random blocks; returns what the cache and attention ops take."""
    seq_lens = torch.randint(1, max_len + 1, (num_seqs,), dtype=torch.int32)
    seq_lens[0] = max_len  # the longest one sets max_seq_len (and v2's partition count)
    blocks_per_seq = [(int(n) + block_size - 1) // block_size for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3  # a few never referenced
    perm = torch.randperm(num_blocks)
    tables = torch.zeros(num_seqs, max(blocks_per_seq), dtype=torch.int32)
    slots, used = [], 0
    for s, nb in enumerate(blocks_per_seq):
        tables[s, :nb] = perm[used : used + nb].to(torch.int32)
        used += nb
        for t in range(int(seq_lens[s])):
            slots.append(int(tables[s, t // block_size]) * block_size + t % block_size)
    key = torch.randn(len(slots), kv_heads, head, device=dev).to(dtype)
    value = torch.randn(len(slots), kv_heads, head, device=dev).to(dtype)
    slot_mapping = torch.tensor(slots, dtype=torch.int64, device=dev)
    return seq_lens.to(dev), tables.to(dev), num_blocks, key, value, slot_mapping


def _reshape_and_cache(ops, key, value, slot_mapping, kshape, vshape, one, shape, out):
    kc = torch.zeros(kshape, dtype=key.dtype, device=key.device)
    vc = torch.zeros(vshape, dtype=key.dtype, device=key.device)
    ops.reshape_and_cache(key, value, kc, vc, slot_mapping, "auto", one, one)
    kr, vr = torch.zeros_like(kc), torch.zeros_like(vc)
    R.reshape_and_cache(key, value, kr, vr, slot_mapping)
    ok = torch.equal(kc, kr) and torch.equal(vc, vr)
    err = max(R.max_abs_err(kc, kr), R.max_abs_err(vc, vr))
    record("reshape_and_cache", key.dtype, shape, err, "0 (exact)", ok)
    out["kc"], out["vc"] = kc, vc


def _reshape_and_cache_flash(ops, key, value, slot_mapping, num_blocks, block_size, one, shape):
    fk = torch.zeros(num_blocks, block_size, *key.shape[1:], dtype=key.dtype, device=key.device)
    fv = torch.zeros_like(fk)
    ops.reshape_and_cache_flash(key, value, fk, fv, slot_mapping, "auto", one, one)
    rk, rv = torch.zeros_like(fk), torch.zeros_like(fv)
    R.reshape_and_cache_flash(key, value, rk, rv, slot_mapping)
    ok = torch.equal(fk, rk) and torch.equal(fv, rv)
    err = max(R.max_abs_err(fk, rk), R.max_abs_err(fv, rv))
    record("reshape_and_cache_flash", key.dtype, shape, err, "0 (exact)", ok)


def _paged_v1(ops, query, kc, vc, kv_heads, scale, tables, seq_lens, block_size, one, ref, shape):
    out = torch.empty_like(query)
    max_seq_len = int(seq_lens.max())
    ops.paged_attention_v1(
        out, query, kc, vc, kv_heads, scale, tables, seq_lens, block_size, max_seq_len, None, "auto", one, one
    )
    check_close("paged_attention_v1", query.dtype, shape, out, ref, *ATTN_TOL[query.dtype])


def _paged_v2(ops, query, kc, vc, kv_heads, scale, tables, seq_lens, block_size, one, ref, shape):
    num_seqs, heads, head = query.shape
    max_seq_len = int(seq_lens.max())
    partition = 512  # PARTITION_SIZE of csrc/attention/paged_attention_v2.cu
    parts = (max_seq_len + partition - 1) // partition
    exp_sums = torch.empty(num_seqs, heads, parts, dtype=torch.float32, device=query.device)
    max_logits = torch.empty_like(exp_sums)
    tmp_out = torch.empty(num_seqs, heads, parts, head, dtype=query.dtype, device=query.device)
    out = torch.empty_like(query)
    ops.paged_attention_v2(
        out, exp_sums, max_logits, tmp_out, query, kc, vc, kv_heads, scale, tables, seq_lens, block_size,
        max_seq_len, None, "auto", one, one,
    )
    check_close("paged_attention_v2", query.dtype, f"{shape}, {parts} partitions", out, ref, *ATTN_TOL[query.dtype])


def check_cache_and_paged_attention(ops, dev):
    one = torch.tensor(1.0, dtype=torch.float32, device=dev)  # k_scale, v_scale (unused by "auto")
    heads, kv_heads = 16, 4
    for dtype in HALF:
        for head, block_size, num_seqs, max_len in ((128, 16, 9, 1500), (64, 32, 5, 300)):
            seq_lens, tables, num_blocks, key, value, slot_mapping = _paged_problem(
                dev, dtype, num_seqs, max_len, block_size, kv_heads, head
            )
            kshape, vshape = R.paged_kv_cache_shapes(num_blocks, block_size, kv_heads, head, dtype)
            shape = f"{key.shape[0]} tok, {kv_heads}x{head}, blocks {num_blocks}x{block_size}"
            caches: dict = {}
            run("reshape_and_cache", dtype, shape, _reshape_and_cache, ops, key, value, slot_mapping, kshape,
                vshape, one, shape, caches)
            run("reshape_and_cache_flash", dtype, shape, _reshape_and_cache_flash, ops, key, value, slot_mapping,
                num_blocks, block_size, one, shape)
            if "kc" not in caches:
                continue
            kc, vc = caches["kc"], caches["vc"]  # written by the kernel (and equal to the reference's)
            query = torch.randn(num_seqs, heads, head, device=dev).to(dtype)
            scale = R.default_scale(head)
            ref = R.paged_attention(query, kc, vc, tables, seq_lens, scale)
            ashape = (f"{num_seqs} seqs <= {int(seq_lens.max())} tok, {heads}/{kv_heads} heads x {head}, "
                      f"block {block_size}")
            args = (ops, query, kc, vc, kv_heads, scale, tables, seq_lens, block_size, one, ref, ashape)
            run("paged_attention_v1", dtype, ashape, _paged_v1, *args)
            run("paged_attention_v2", dtype, ashape, _paged_v2, *args)


# --- FP8 quantization ---------------------------------------------------------------------------


def _check_fp8(op, shape, x, q, scale, ref_q, ref_scale):
    """q must be e4m3fn, the scales equal the reference's (float32, 1e-6 relative), every element
    within one e4m3 step of the reference's (the kernels may round x / scale differently by one
    ulp of float32); max abs error reported between the dequantized values."""
    ok = q.dtype == R.FP8_DTYPE and tuple(scale.shape) == tuple(ref_scale.shape)
    ok = ok and bool(torch.allclose(scale.float(), ref_scale.float(), rtol=1e-6, atol=0.0))
    qf, rf = q.float(), ref_q.float()
    step_ok = bool(torch.all((qf - rf).abs() <= R.fp8_ulp_bound(rf)))
    mismatches = int((qf != rf).sum())
    err = R.max_abs_err(qf * scale.float(), rf * ref_scale.float())
    note = f"{mismatches}/{q.numel()} elements one step off" if mismatches else ""
    record(op, x.dtype, shape, err, "scale 1e-6 rel; q within 1 e4m3 step", ok and step_ok, note)


def _fp8_static(ops, x, shape):
    s = torch.tensor([0.02], dtype=torch.float32, device=x.device)  # clamps the outlier (40 / 0.02 > 448)
    q, scale = ops.scaled_fp8_quant(x, s)
    _check_fp8("scaled_fp8_quant static per-tensor", shape, x, q, scale, R.static_fp8_quant(x, s), s)


def _fp8_dynamic(ops, x, shape):
    q, scale = ops.scaled_fp8_quant(x)
    _check_fp8("scaled_fp8_quant dynamic per-tensor", shape, x, q, scale, *R.dynamic_fp8_quant(x))


def _fp8_per_token(ops, x, shape):
    q, scale = ops.scaled_fp8_quant(x, use_per_token_if_dynamic=True)
    _check_fp8("scaled_fp8_quant dynamic per-token", shape, x, q, scale, *R.dynamic_per_token_fp8_quant(x))


def _fp8_per_token_ub(ops, x, shape):
    ub = torch.tensor([6.0], dtype=torch.float32, device=x.device)
    q, scale = ops.scaled_fp8_quant(x, scale_ub=ub, use_per_token_if_dynamic=True)
    ref = R.dynamic_per_token_fp8_quant(x, ub)
    _check_fp8("scaled_fp8_quant dynamic per-token scale_ub", shape, x, q, scale, *ref)


def check_fp8(ops, dev):
    for dtype in (*HALF, torch.float32):
        for m, n in ((17, 1024), (128, 4096)):
            x = (3 * torch.randn(m, n, device=dev)).to(dtype)
            x[1, 5] = 40.0  # one outlier
            shape = f"{m}x{n}"
            run("scaled_fp8_quant static per-tensor", dtype, shape, _fp8_static, ops, x, shape)
            run("scaled_fp8_quant dynamic per-tensor", dtype, shape, _fp8_dynamic, ops, x, shape)
            run("scaled_fp8_quant dynamic per-token", dtype, shape, _fp8_per_token, ops, x, shape)
            run("scaled_fp8_quant dynamic per-token scale_ub", dtype, shape, _fp8_per_token_ub, ops, x, shape)


# --- report -------------------------------------------------------------------------------------


def loaded_shared_objects() -> dict[str, str]:
    """The vLLM extension modules that import here, and where from."""
    import importlib

    found = {}
    for mod in ("vllm._C", "vllm._moe_C", "vllm.cumem_allocator", "vllm._flashmla_C", "vllm._flashmla_extension_C",
                "vllm.vllm_flash_attn._vllm_fa2_C", "vllm.vllm_flash_attn._vllm_fa3_C"):
        try:
            found[mod] = importlib.import_module(mod).__file__ or "?"
        except Exception as e:  # noqa: BLE001 - report, do not fail: the optional ones may be absent
            found[mod] = f"not loaded ({type(e).__name__}: {str(e)[:100]})"
    maps = Path("/proc/self/maps")
    if maps.exists():
        sos = sorted({line.split()[-1] for line in maps.read_text().splitlines()
                      if "/vllm/" in line and ".so" in line.split()[-1]})
        found["mapped vllm shared objects"] = ", ".join(sos)
    return found


def print_table() -> None:
    cols = ("op", "dtype", "shape", "max_abs_err", "tolerance", "pass")
    rows = [[r["op"], r["dtype"], r["shape"], f"{r['max_abs_err']:.3e}", r["tolerance"],
             ("PASS" if r["pass"] else "FAIL") + (f" ({r['note']})" if r["note"] else "")] for r in RESULTS]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    dev = torch.device("cuda")
    try:
        import vllm
        import vllm._custom_ops as ops
    except Exception:
        traceback.print_exc()
        print("vLLM or its kernels failed to import", file=sys.stderr)
        return 2
    if not hasattr(torch.ops._C, "rms_norm"):
        print("torch.ops._C has no rms_norm: vllm._C did not load (a build without kernels?)", file=sys.stderr)
        return 2

    info = {
        "vllm": f"{vllm.__version__} ({Path(vllm.__file__).parent})",
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda})",
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(),
        "capability": torch.cuda.get_device_capability(),
    }
    started = time.time()
    for check in (check_norms, check_silu_and_mul, check_rotary, check_cache_and_paged_attention, check_fp8):
        check(ops, dev)
    torch.cuda.synchronize()
    info["checks_seconds"] = round(time.time() - started, 1)
    info["shared_objects"] = loaded_shared_objects()

    print()
    print_table()
    print()
    for k, v in info.items():
        if k == "shared_objects":
            for mod, path in v.items():
                print(f"{mod}: {path}")
        else:
            print(f"{k}: {v}")
    failed = [r for r in RESULTS if not r["pass"]]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"info": info, "results": RESULTS}, indent=2, default=str) + "\n")
    return 1 if failed or not RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())
