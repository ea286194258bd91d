"""The PyTorch references of tests/gpu/vllm_ops.py, checked on the CPU against hand-worked values
and independent formulations, so that a mismatch on the GPU points at the kernel, not the
reference. Hermetic and fast; skipped where PyTorch is not installed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_refs as R  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_rms_norm_known_values():
    x = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    w = torch.tensor([1.0, 2.0])
    out = R.rms_norm(x, w, eps=0.0)
    r = math.sqrt((9 + 16) / 2)
    assert torch.allclose(out, torch.tensor([[3 / r, 8 / r], [1.0, -2.0]]), atol=1e-6)


def test_rms_norm_matches_layer_norm_formulation():
    x = torch.randn(5, 64, dtype=torch.float32)
    w = torch.randn(64)
    eps = 1e-6
    ref = torch.nn.functional.rms_norm(x, (64,), weight=w, eps=eps)
    assert torch.allclose(R.rms_norm(x, w, eps), ref, atol=1e-5)


def test_rms_norm_rounds_before_weight_like_the_kernel():
    x = torch.randn(4, 128).to(torch.float16)
    w = torch.randn(128).to(torch.float16)
    out = R.rms_norm(x, w, 1e-5)
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).half()
    assert torch.equal(out, normed.float() * w.float())


def test_fused_add_rms_norm():
    x = torch.randn(3, 32).to(torch.bfloat16)
    res = torch.randn(3, 32).to(torch.bfloat16)
    w = torch.randn(32).to(torch.bfloat16)
    out, new_res = R.fused_add_rms_norm(x, res, w, 1e-6)
    assert new_res.dtype == torch.bfloat16
    assert torch.equal(new_res, x + res)
    assert torch.equal(out, R.rms_norm(x + res, w, 1e-6))


def test_silu_and_mul():
    x = torch.tensor([[0.0, 1.0, 20.0, 5.0, 7.0, 3.0]])  # d = 3: gate [0, 1, 20], up [5, 7, 3]
    out = R.silu_and_mul(x)
    expected = torch.tensor([[0.0, 7.0 / (1.0 + math.exp(-1.0)), 20.0 * 3.0 / (1.0 + math.exp(-20.0))]])
    assert torch.allclose(out, expected, atol=1e-5)
    y = torch.randn(7, 2 * 48)
    assert torch.allclose(R.silu_and_mul(y), torch.nn.functional.silu(y[:, :48]) * y[:, 48:], atol=1e-6)


def test_rope_cache_layout():
    cache = R.rope_cos_sin_cache(16, 8, base=10000.0)
    assert cache.shape == (16, 8)
    assert torch.allclose(cache[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    # position 3, frequency 1 = 10000^(-2/8)
    f = 10000.0 ** (-2 / 8)
    assert math.isclose(float(cache[3, 1]), math.cos(3 * f), abs_tol=1e-6)
    assert math.isclose(float(cache[3, 5]), math.sin(3 * f), abs_tol=1e-6)


@pytest.mark.parametrize("is_neox", [True, False])
def test_rotary_position_zero_is_identity_and_norm_preserved(is_neox):
    head, heads = 16, 3
    cache = R.rope_cos_sin_cache(64, head)
    x = torch.randn(5, heads * head)
    pos = torch.tensor([0, 1, 7, 30, 63])
    out = R.rotary_embedding(pos, x, head, cache, is_neox)
    assert out.shape == x.shape
    assert torch.allclose(out[0], x[0], atol=1e-6)
    # a rotation keeps each head's norm
    n_in = x.reshape(5, heads, head).norm(dim=-1)
    n_out = out.reshape(5, heads, head).norm(dim=-1)
    assert torch.allclose(n_in, n_out, atol=1e-5)


def test_rotary_hand_worked_pair():
    # head_size 2, one frequency (inv_freq = 1): position p rotates (a, b) by angle p
    cache = R.rope_cos_sin_cache(8, 2)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pos = torch.tensor([1, 2])
    for is_neox in (True, False):  # with one pair both styles coincide
        out = R.rotary_embedding(pos, x, 2, cache, is_neox)
        exp = torch.tensor([[math.cos(1), math.sin(1)], [-2 * math.sin(2), 2 * math.cos(2)]])
        assert torch.allclose(out, exp, atol=1e-6)


def test_rotary_gptj_is_neox_on_interleaved_features():
    head, heads, T = 8, 2, 4
    cache = R.rope_cos_sin_cache(32, head)
    pos = torch.randint(0, 32, (T,))
    x = torch.randn(T, heads, head)
    # neox pairs (i, i + 4); gptj pairs (2i, 2i + 1): permute features so they coincide
    perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])  # gptj order -> neox order
    out_gptj = R.rotary_embedding(pos, x, head, cache, is_neox=False)
    out_neox = R.rotary_embedding(pos, x[..., perm], head, cache, is_neox=True)
    assert torch.allclose(out_gptj[..., perm], out_neox, atol=1e-6)


def test_rotary_partial_leaves_the_rest():
    head, rot = 16, 8
    cache = R.rope_cos_sin_cache(32, rot)
    x = torch.randn(3, 2 * head)
    out = R.rotary_embedding(torch.tensor([5, 6, 7]), x, head, cache, True)
    xr, outr = x.reshape(3, 2, head), out.reshape(3, 2, head)
    assert torch.equal(outr[..., rot:], xr[..., rot:])
    assert not torch.allclose(outr[..., :rot], xr[..., :rot])


def test_rotary_matches_complex_multiplication():
    # GPT-J style is a multiplication of (x[2i] + i x[2i+1]) by exp(i * p * f_i)
    head = 32
    cache = R.rope_cos_sin_cache(100, head, base=500.0)
    pos = torch.tensor([3, 99])
    x = torch.randn(2, head)
    out = R.rotary_embedding(pos, x, head, cache, is_neox=False)
    inv_freq = 1.0 / (500.0 ** (torch.arange(0, head, 2, dtype=torch.float64) / head))
    z = torch.view_as_complex(x.double().reshape(2, head // 2, 2).contiguous())
    rot = torch.polar(torch.ones_like(inv_freq), inv_freq)[None] ** pos.double()[:, None]
    expected = torch.view_as_real(z * rot).reshape(2, head).float()
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_paged_cache_roundtrip(dtype):
    num_blocks, block, hkv, d = 6, 4, 2, 16
    kshape, vshape = R.paged_kv_cache_shapes(num_blocks, block, hkv, d, dtype)
    x = 16 // torch.tensor([], dtype=dtype).element_size()
    assert kshape == (num_blocks, hkv, d // x, block, x) and vshape == (num_blocks, hkv, d, block)
    kc, vc = torch.zeros(kshape, dtype=dtype), torch.zeros(vshape, dtype=dtype)
    T = 10
    k, v = torch.randn(T, hkv, d).to(dtype), torch.randn(T, hkv, d).to(dtype)
    table = torch.tensor([4, 1, 5])
    slots = torch.tensor([int(table[t // block]) * block + t % block for t in range(T)])
    R.reshape_and_cache(k, v, kc, vc, slots)
    k2, v2 = R.gather_paged_kv(kc, vc, table, T)
    assert torch.equal(k2, k) and torch.equal(v2, v)
    # element (token t, head h, dim i) lands at key_cache[block, h, i // x, offset, i % x]
    t, h, i = 6, 1, 11
    assert kc[int(table[t // block]), h, i // x, t % block, i % x] == k[t, h, i]
    assert vc[int(table[t // block]), h, i, t % block] == v[t, h, i]
    # blocks not in the table stay untouched; negative slots are skipped
    assert not kc[0].any() and not vc[2].any()
    R.reshape_and_cache(k[:1] + 1, v[:1] + 1, kc, vc, torch.tensor([-1]))
    assert torch.equal(R.gather_paged_kv(kc, vc, table, T)[0], k)


def test_flash_cache_layout():
    kc, vc = torch.zeros(3, 4, 2, 8), torch.zeros(3, 4, 2, 8)
    k, v = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    slots = torch.tensor([9, 0, 11, -1, 4])
    R.reshape_and_cache_flash(k, v, kc, vc, slots)
    assert torch.equal(kc[2, 1], k[0]) and torch.equal(vc[0, 0], v[1]) and torch.equal(kc[2, 3], k[2])
    assert torch.equal(vc[1, 0], v[4])
    assert int((kc != 0).any(dim=(-1, -2)).sum()) == 4  # the padded token wrote nothing


def test_attention_matches_sdpa_with_gqa():
    H, Hkv, L, D = 8, 2, 37, 32
    q, k, v = torch.randn(H, D), torch.randn(L, Hkv, D), torch.randn(L, Hkv, D)
    scale = R.default_scale(D)
    out = R.attention(q, k, v, scale)
    kr = k.repeat_interleave(H // Hkv, dim=1).permute(1, 0, 2)  # [H, L, D]
    vr = v.repeat_interleave(H // Hkv, dim=1).permute(1, 0, 2)
    ref = torch.nn.functional.scaled_dot_product_attention(q[:, None], kr, vr, scale=scale)[:, 0]
    assert torch.allclose(out, ref, atol=1e-5)


def test_attention_single_token_returns_its_value():
    q, k, v = torch.randn(4, 8), torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    out = R.attention(q, k, v, 0.3)
    assert torch.allclose(out, v[0].repeat_interleave(2, dim=0))


def test_paged_attention_reads_through_block_tables():
    num_blocks, block, H, Hkv, D = 16, 4, 4, 2, 16
    kshape, vshape = R.paged_kv_cache_shapes(num_blocks, block, Hkv, D, torch.float32)
    kc, vc = torch.zeros(kshape), torch.zeros(vshape)
    seq_lens = torch.tensor([5, 9], dtype=torch.int32)
    tables = torch.tensor([[7, 2, 0], [3, 11, 14]], dtype=torch.int32)
    ks, vs = [], []
    for s in range(2):
        L = int(seq_lens[s])
        k, v = torch.randn(L, Hkv, D), torch.randn(L, Hkv, D)
        slots = torch.tensor([int(tables[s, t // block]) * block + t % block for t in range(L)])
        R.reshape_and_cache(k, v, kc, vc, slots)
        ks.append(k)
        vs.append(v)
    q = torch.randn(2, H, D)
    out = R.paged_attention(q, kc, vc, tables, seq_lens, 0.25)
    for s in range(2):
        assert torch.allclose(out[s], R.attention(q[s], ks[s], vs[s], 0.25), atol=1e-6)


def test_fp8_static_known_values():
    x = torch.tensor([[1.0, -2.0, 1000.0, 0.3]])
    q = R.static_fp8_quant(x, torch.tensor([0.5]))
    # x / 0.5 = [2, -4, 2000 -> clamp 448, 0.6 -> nearest e4m3 0.625]
    assert q.dtype == torch.float8_e4m3fn
    assert q.float().tolist() == [[2.0, -4.0, 448.0, 0.625]]


def test_fp8_dynamic_per_tensor():
    x = torch.tensor([[1.0, -8.96], [0.5, 2.0]])
    q, scale = R.dynamic_fp8_quant(x)
    assert scale.shape == (1,)
    assert math.isclose(float(scale), 8.96 / 448.0, rel_tol=1e-6)
    assert float(q.float().abs().max()) == 448.0  # the largest element maps to the top of the range
    deq = q.float() * scale
    assert torch.all((deq - x).abs() <= x.abs() * 2.0**-4 + 1e-6)  # e4m3 rounding: half a step


def test_fp8_dynamic_per_token_with_floor_and_upper_bound():
    x = torch.tensor([[1.0, -4.48], [0.0, 0.0], [100.0, 1.0]])
    q, scale = R.dynamic_per_token_fp8_quant(x)
    assert scale.shape == (3, 1)
    assert math.isclose(float(scale[0]), 4.48 / 448.0, rel_tol=1e-6)
    assert math.isclose(float(scale[1]), 1.0 / (448.0 * 512.0), rel_tol=1e-6)  # all-zero row: the floor
    assert q[1].float().abs().max() == 0
    q2, scale2 = R.dynamic_per_token_fp8_quant(x, scale_ub=torch.tensor([10.0]))
    assert math.isclose(float(scale2[2]), 10.0 / 448.0, rel_tol=1e-6)
    assert float(q2[2, 0]) == 448.0  # 100 exceeds the bound: clamped


def test_fp8_ulp_bound_covers_one_step():
    vals = torch.tensor([448.0, 1.0, 0.0137, 2.0**-9])
    q = vals.to(torch.float8_e4m3fn).float()
    bound = R.fp8_ulp_bound(q)
    # the next representable value above each is within the bound
    nxt = (q.to(torch.float8_e4m3fn).view(torch.uint8) + 1).view(torch.float8_e4m3fn).float()
    assert torch.all((nxt[1:] - q[1:]).abs() <= bound[1:])


def test_within_and_max_abs_err():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1])
    assert math.isclose(R.max_abs_err(a, b), 0.1, rel_tol=1e-5)
    assert R.within(a, b, atol=0.11, rtol=0.0) and not R.within(a, b, atol=0.05, rtol=0.0)
    assert not R.within(torch.tensor([float("nan")]), torch.tensor([0.0]), 1.0, 1.0)
