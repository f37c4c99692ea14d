"""taskhub.native.paged_decode_attention: one query per sequence over keys/values read in place from paged
stores equals SDPA (float64) over the same keys gathered, for grouped-query heads, windows and both dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taskhub.cpu_info import cpu_info
from taskhub.native import native_ops_available, paged_decode_attention

pytestmark = pytest.mark.skipif(not cpu_info().avx512, reason="taskhub's kernels need AVX-512")

BLOCKS, BLOCK_SIZE, SEQS, WIDTH = 40, 16, 6, 5


def _case(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(BLOCKS, BLOCK_SIZE, kv_heads, head_dim, generator=g).to(dtype)
    v = torch.randn(BLOCKS, BLOCK_SIZE, kv_heads, head_dim, generator=g).to(dtype)
    q = torch.randn(SEQS, heads, head_dim, generator=g).to(dtype)
    table = torch.randperm(BLOCKS, generator=g)[: SEQS * WIDTH].view(SEQS, WIDTH)  # scattered, as the engine's
    keys = torch.randint(1, WIDTH * BLOCK_SIZE + 1, (SEQS,), generator=g)
    keys[0] = 1  # a sequence's first token sees only itself
    return q, k, v, table, keys


def _sdpa(q, k, v, table, first, keys, scale):
    """torch's SDPA in float64 over each sequence's keys gathered from its blocks (grouped heads repeated)."""
    out = []
    for s in range(q.shape[0]):
        ks = k[table[s]].flatten(0, 1)[first[s] : keys[s]].double().transpose(0, 1)  # [kv_heads, L, hd]
        vs = v[table[s]].flatten(0, 1)[first[s] : keys[s]].double().transpose(0, 1)
        group = q.shape[1] // ks.shape[0]
        ks, vs = ks.repeat_interleave(group, 0), vs.repeat_interleave(group, 0)
        out.append(F.scaled_dot_product_attention(q[s].double()[:, None], ks, vs, scale=scale)[:, 0])
    return torch.stack(out)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (4, 4, 16), (8, 1, 128), (14, 2, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 7])
def test_paged_decode_attention_equals_sdpa_over_the_gathered_keys(
    heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, window: int | None
) -> None:
    assert native_ops_available()
    q, k, v, table, keys = _case(heads, kv_heads, head_dim, dtype)
    first = torch.zeros_like(keys) if window is None else (keys - window).clamp_min(0)
    scale = head_dim**-0.5
    got = paged_decode_attention(q, k, v, table, first, keys, scale)
    expected = _sdpa(q, k, v, table, first, keys, scale)
    assert got.dtype == dtype and got.shape == q.shape
    tolerance = 1e-5 if dtype == torch.float32 else 8e-3  # fp32 sums; bf16 output rounding (2^-8)
    assert (got.double() - expected).abs().max() < tolerance


def test_bad_inputs_are_refused_naming_them() -> None:
    assert native_ops_available()
    q, k, v, table, keys = _case(4, 2, 16, torch.float32)
    first = torch.zeros_like(keys)
    with pytest.raises(RuntimeError, match="head_dim must match"):
        paged_decode_attention(q[..., :8], k, v, table, first, keys, 1.0)
    with pytest.raises(RuntimeError, match="one dtype"):
        paged_decode_attention(q.bfloat16(), k, v, table, first, keys, 1.0)
    with pytest.raises(RuntimeError, match="no visible key or more keys than blocks"):
        paged_decode_attention(q, k, v, table, first, keys + WIDTH * BLOCK_SIZE, 1.0)
    with pytest.raises(RuntimeError, match="names block 40 of a store with 40"):
        paged_decode_attention(q, k, v, table.masked_fill(table == table[1, 0], BLOCKS), first, keys, 1.0)
    with pytest.raises(RuntimeError, match="must be int64"):
        paged_decode_attention(q, k, v, table.int(), first, keys, 1.0)
