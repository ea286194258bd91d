"""Pure-PyTorch references for the vLLM custom ops that tests/gpu/vllm_ops.py checks.

Each reference follows what vLLM 0.14.1's kernel computes (csrc/layernorm_kernels.cu,
activation_kernels.cu, pos_encoding_kernels.cu, cache_kernels.cu, attention/paged_attention_v*.cu,
quantization/w8a8/fp8/common.cu), in float32 where the kernel accumulates in float32, and runs on
any device (tests/gpu/test_references.py checks them on the CPU against hand-worked cases and
independent formulations). Nothing here imports vLLM.
"""

from __future__ import annotations

import math

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448.0
FP8_MIN_SCALE = 1.0 / (FP8_MAX * 512.0)  # the per-token kernel's floor on a scale (quantization/utils.cuh)


# --- normalization and activation ---------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = (x / sqrt(mean(x^2) + eps)) * weight; the kernel rounds the normalized value to x's dtype
    before multiplying by the weight, so the reference does too. Returns float32."""
    xf = x.float()
    inv = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (xf * inv).to(x.dtype).float() * weight.float()


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op updates in place: residual <- x + residual (in x's dtype), x <- rms_norm(residual).
    Returns (new x as float32, new residual in x's dtype)."""
    new_residual = x + residual
    return rms_norm(new_residual, weight, eps), new_residual


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """out = silu(x[..., :d]) * x[..., d:] for an input of last dimension 2d. Returns float32."""
    d = x.shape[-1] // 2
    a, b = x[..., :d].float(), x[..., d:].float()
    return a / (1.0 + torch.exp(-a)) * b


# --- rotary embedding ---------------------------------------------------------------------------


def rope_cos_sin_cache(max_position: int, rotary_dim: int, base: float = 10000.0) -> torch.Tensor:
    """[max_position, rotary_dim] float32: cos of the rotary_dim/2 frequencies, then their sin, as
    vLLM's RotaryEmbedding builds its cos_sin_cache."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    t = torch.arange(max_position, dtype=torch.float64)
    freqs = torch.outer(t, inv_freq)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).float()


def rotary_embedding(
    positions: torch.Tensor, x: torch.Tensor, head_size: int, cos_sin_cache: torch.Tensor, is_neox: bool
) -> torch.Tensor:
    """Rotate the first rotary_dim (= cos_sin_cache.shape[1]) features of every head of x
    ([num_tokens, num_heads * head_size] or [num_tokens, num_heads, head_size]) by the angles of
    each token's position. NeoX style pairs feature i with i + rotary_dim/2; GPT-J style pairs 2i
    with 2i+1. Returns float32 in x's shape."""
    shape = x.shape
    xf = x.float().reshape(shape[0], -1, head_size)
    rot_dim = cos_sin_cache.shape[1]
    half = rot_dim // 2
    cs = cos_sin_cache.float()[positions.long()]  # [T, rot_dim]
    cos, sin = cs[:, None, :half], cs[:, None, half:]  # [T, 1, half]
    rot, rest = xf[..., :rot_dim], xf[..., rot_dim:]
    if is_neox:
        a, b = rot[..., :half], rot[..., half:]
        out = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    else:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    return torch.cat([out, rest], dim=-1).reshape(shape)


# --- KV cache layouts ---------------------------------------------------------------------------


def paged_kv_cache_shapes(
    num_blocks: int, block_size: int, num_kv_heads: int, head_size: int, dtype: torch.dtype
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The layout of reshape_and_cache / paged_attention: key [num_blocks, num_kv_heads,
    head_size/x, block_size, x] with x = 16 bytes / element size, value [num_blocks, num_kv_heads,
    head_size, block_size]."""
    x = 16 // torch.tensor([], dtype=dtype).element_size()
    return (num_blocks, num_kv_heads, head_size // x, block_size, x), (num_blocks, num_kv_heads, head_size, block_size)


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write token t's key/value ([num_tokens, num_kv_heads, head_size]) to slot slot_mapping[t]
    (block = slot // block_size, offset = slot % block_size) of the paged layout, in place. Slots
    < 0 are skipped (padding), as the kernel does."""
    block_size, x = key_cache.shape[3], key_cache.shape[4]
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        b, off = divmod(slot, block_size)
        k = key[t]  # [H, D]
        key_cache[b, :, :, off, :] = k.reshape(k.shape[0], -1, x)
        value_cache[b, :, :, off] = value[t]


def reshape_and_cache_flash(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """The same for the flash layout: caches [num_blocks, block_size, num_kv_heads, head_size]."""
    block_size = key_cache.shape[1]
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        b, off = divmod(slot, block_size)
        key_cache[b, off] = key[t]
        value_cache[b, off] = value[t]


def gather_paged_kv(
    key_cache: torch.Tensor, value_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one sequence's first seq_len tokens back from the paged layout: ([seq_len, H, D],
    [seq_len, H, D])."""
    block_size = key_cache.shape[3]
    ks, vs = [], []
    for pos in range(seq_len):
        b = int(block_table[pos // block_size])
        off = pos % block_size
        ks.append(key_cache[b, :, :, off, :].reshape(key_cache.shape[1], -1))
        vs.append(value_cache[b, :, :, off])
    return torch.stack(ks), torch.stack(vs)


# --- attention ----------------------------------------------------------------------------------


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Decode attention of one query token over a sequence, with grouped KV heads: q [H, D],
    k and v [L, Hkv, D] with H a multiple of Hkv (query head h reads KV head h // (H / Hkv)).
    softmax(scale * q k^T) v in float32; returns [H, D]."""
    num_heads, num_kv_heads = q.shape[0], k.shape[1]
    group = num_heads // num_kv_heads
    kf = k.float().repeat_interleave(group, dim=1)  # [L, H, D]
    vf = v.float().repeat_interleave(group, dim=1)
    logits = torch.einsum("hd,lhd->hl", q.float(), kf) * scale
    p = torch.softmax(logits, dim=-1)
    return torch.einsum("hl,lhd->hd", p, vf)


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """What paged_attention_v1/v2 compute: for each sequence s, attention of query[s] ([num_seqs,
    H, D]) over the seq_lens[s] tokens its block table points at in the paged caches. float32."""
    out = torch.empty(query.shape, dtype=torch.float32, device=query.device)
    for s in range(query.shape[0]):
        k, v = gather_paged_kv(key_cache, value_cache, block_tables[s], int(seq_lens[s]))
        out[s] = attention(query[s], k, v, scale)
    return out


# --- FP8 (e4m3fn) quantization ------------------------------------------------------------------


def fp8_quant_with_scale(x: torch.Tensor, scale: torch.Tensor, reciprocal: bool = True) -> torch.Tensor:
    """q = fp8(clamp(x * (1 / scale), -448, 448)), rounding to nearest even; scale broadcasts
    against x ([1], [M, 1], ...). The static and dynamic per-tensor kernels multiply by the
    reciprocal of the scale, the per-token kernel divides by it (reciprocal=False)."""
    y = x.float() * (1.0 / scale.float()) if reciprocal else x.float() / scale.float()
    return y.clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def static_fp8_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """scaled_fp8_quant(x, scale) with a per-tensor scale."""
    return fp8_quant_with_scale(x, scale.reshape(1))


def dynamic_fp8_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scaled_fp8_quant(x): per-tensor scale = max|x| / 448 (shape [1])."""
    scale = (x.float().abs().max() / FP8_MAX).reshape(1)
    return fp8_quant_with_scale(x, scale), scale


def dynamic_per_token_fp8_quant(
    x: torch.Tensor, scale_ub: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """scaled_fp8_quant(x, use_per_token_if_dynamic=True): per row, scale = max(min(max|row|,
    scale_ub) / 448, 1 / (448 * 512)) (shape [M, 1])."""
    amax = x.float().abs().amax(dim=-1, keepdim=True)
    if scale_ub is not None:
        amax = torch.minimum(amax, scale_ub.float().reshape(1, 1))
    scale = torch.clamp(amax / FP8_MAX, min=FP8_MIN_SCALE)
    return fp8_quant_with_scale(x, scale, reciprocal=False), scale


def fp8_ulp_bound(ref: torch.Tensor) -> torch.Tensor:
    """Elementwise bound of one e4m3 step around ref (float values of fp8 numbers): a step is at
    most 1/8 of the magnitude for normal numbers and 2^-9 for subnormal ones."""
    return ref.float().abs() * 0.125 + 2.0**-9


def max_abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def within(a: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float) -> bool:
    """Every |a - ref| <= atol + rtol * |ref| (torch.allclose's rule, NaN fails)."""
    diff = (a.float() - ref.float()).abs()
    bound = atol + rtol * ref.float().abs()
    return bool(torch.all(diff <= bound)) and not bool(torch.isnan(a.float()).any())


def default_scale(head_size: int) -> float:
    return 1.0 / math.sqrt(head_size)
