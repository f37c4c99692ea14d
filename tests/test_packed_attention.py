"""taskhub.native.packed_attention: bidirectional attention over packed sequences, read in place from the
fused query/key/value rows, equals torch's SDPA (float64) run on each sequence alone, as closely as SDPA in fp32 does;
with bf16x3 (both matmuls as three bf16 products on AMX) to ~1e-5 of the output's size, >10x closer than bf16
inputs get; bad inputs are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taskhub.native import native_ops_available, packed_attention, packed_attention_bf16x3_fits

pytestmark = pytest.mark.skipif(not native_ops_available(), reason="taskhub's native ops do not run here")


def _sdpa(qkv: torch.Tensor, lengths: list[int], heads: int, dtype: torch.dtype) -> torch.Tensor:
    hidden = qkv.shape[1] // 3
    out, first = [], 0
    for length in lengths:
        q, k, v = qkv[first : first + length].to(dtype).view(length, 3, heads, hidden // heads).permute(1, 2, 0, 3)
        out.append(F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(length, hidden))
        first += length
    return torch.cat(out)


@pytest.mark.parametrize(
    ("heads", "head_dim", "lengths"),
    [
        (12, 32, [75, 3, 1, 17, 128, 33]),  # MiniLM: sequences of every remainder modulo 16
        (12, 64, [197, 197]),  # ViT-base: images laid end to end
        (2, 16, [5, 0, 40]),  # an empty sequence
        (3, 48, [16, 1]),
        (4, 128, [50, 7]),
        (1, 32, [300]),
    ],
)
def test_packed_attention_equals_sdpa_per_sequence(heads: int, head_dim: int, lengths: list[int]) -> None:
    g = torch.Generator().manual_seed(sum(lengths) + head_dim)
    qkv = torch.randn(sum(lengths), 3 * heads * head_dim, generator=g) * 2
    starts = F.pad(torch.tensor(lengths).cumsum(0), (1, 0))
    got = packed_attention(qkv, starts, heads, head_dim**-0.5)
    assert got.shape == (sum(lengths), heads * head_dim) and got.dtype == torch.float32
    exact = _sdpa(qkv, lengths, heads, torch.float64)
    sdpa_fp32_error = (_sdpa(qkv, lengths, heads, torch.float32).double() - exact).abs().max().item()
    assert (got.double() - exact).abs().max().item() <= 2 * sdpa_fp32_error  # as close as torch's own fp32


@pytest.mark.skipif(not packed_attention_bf16x3_fits(torch.float32, 32), reason="bf16x3 attention needs AMX")
@pytest.mark.parametrize(
    ("heads", "head_dim", "lengths"),
    [
        (12, 32, [75, 3, 1, 17, 128, 33]),  # MiniLM: lengths of every remainder modulo 32 around a block
        (12, 64, [197, 197]),  # ViT-base
        (2, 32, [5, 0, 40]),  # an empty sequence
        (4, 128, [50, 7]),
        (1, 32, [900]),  # probabilities x values over more keys than one k chunk
    ],
)
def test_bf16x3_packed_attention_equals_sdpa_per_sequence(heads: int, head_dim: int, lengths: list[int]) -> None:
    g = torch.Generator().manual_seed(sum(lengths) + head_dim)
    qkv = torch.randn(sum(lengths), 3 * heads * head_dim, generator=g)
    starts = F.pad(torch.tensor(lengths).cumsum(0), (1, 0))
    got = packed_attention(qkv, starts, heads, head_dim**-0.5, bf16x3=True)
    assert got.shape == (sum(lengths), heads * head_dim) and got.dtype == torch.float32
    exact = _sdpa(qkv, lengths, heads, torch.float64)
    error = (got.double() - exact).abs().max().item()
    assert error <= 2e-5 * exact.abs().max().item()
    bf16_inputs = _sdpa(qkv.bfloat16().float(), lengths, heads, torch.float64)  # what one bf16 product keeps
    assert (bf16_inputs - exact).abs().max().item() > 10 * error


def test_bad_inputs_are_refused_by_name() -> None:
    qkv = torch.randn(10, 3 * 2 * 32)
    starts = torch.tensor([0, 4, 10])
    with pytest.raises(RuntimeError, match="float32"):
        packed_attention(qkv.double(), starts, 2, 1.0)
    with pytest.raises(RuntimeError, match="not 3 \\* heads \\* head_dim"):
        packed_attention(qkv, starts, 7, 1.0)
    with pytest.raises(RuntimeError, match="multiple of 16 up to 128"):
        packed_attention(torch.randn(10, 3 * 24), starts, 1, 1.0)
    with pytest.raises(RuntimeError, match="from 0 to the number of rows"):
        packed_attention(qkv, torch.tensor([0, 4, 9]), 2, 1.0)
    with pytest.raises(RuntimeError, match="must not decrease"):
        packed_attention(qkv, torch.tensor([0, 6, 4, 10]), 2, 1.0)
    with pytest.raises(RuntimeError, match="int64"):
        packed_attention(qkv, starts.int(), 2, 1.0)
    with pytest.raises(RuntimeError, match="bf16x3 needs"):  # head_dim 48 (AMX), or a CPU without AMX
        packed_attention(torch.randn(10, 3 * 48), starts, 1, 1.0, bf16x3=True)
