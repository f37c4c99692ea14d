"""taskhub.native.amx_linear_bf16x3: fp32 linear layers as three bf16 products on AMX tiles equal a float64
product of the same fp32 inputs to ~1e-5 of the output's size (fp32 GEMMs: ~1e-6), for bias, erf GELU and
residual epilogues, rows that fill no whole tile, and bad inputs refused by name. amx_gelu_mlp_bf16x3 (both
linears of a feed-forward block in one call) and cpu_kernels.GeluMlp equal the float64 block alike."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskhub.cpu_kernels import GeluMlp, Linear
from taskhub.native import amx_bf16x3_available, amx_gelu_mlp_bf16x3, amx_linear_bf16x3, amx_pack_bf16x3

pytestmark = pytest.mark.skipif(not amx_bf16x3_available(), reason="the bf16x3 kernel needs a CPU with AMX")


def _reference(x, weight, bias, gelu, residual):
    y = x.double() @ weight.double().T
    y = y if bias is None else y + bias.double()
    y = 0.5 * y * (1 + torch.erf(y / 2**0.5)) if gelu else y
    return y if residual is None else y + residual.double()


@pytest.mark.parametrize(
    ("rows", "features", "outputs"),
    [(1, 32, 32), (7, 64, 96), (31, 384, 1152), (33, 384, 64), (129, 1536, 384), (300, 96, 1536), (4000, 64, 32)],
)
@pytest.mark.parametrize(
    ("with_bias", "gelu", "with_residual"),
    [(True, False, False), (True, True, False), (True, False, True), (False, True, True)],
)
def test_bf16x3_linear_equals_the_float64_layer(rows, features, outputs, with_bias, gelu, with_residual) -> None:
    g = torch.Generator().manual_seed(rows + features)
    x = torch.randn(rows, features, generator=g) * 3
    weight = torch.randn(outputs, features, generator=g) * features**-0.5
    bias = torch.randn(outputs, generator=g) if with_bias else None
    residual = torch.randn(rows, outputs, generator=g) if with_residual else None
    got = amx_linear_bf16x3(x, amx_pack_bf16x3(weight), bias, gelu, residual)
    expected = _reference(x, weight, bias, gelu, residual)
    assert got.dtype == torch.float32 and got.shape == (rows, outputs)
    scale = expected.abs().max().item()
    assert (got.double() - expected).abs().max().item() <= 2e-5 * scale
    # and it is no fp32-input-rounding bf16 GEMM: that one is ~100x further off
    bf16 = _reference(x.bfloat16().float(), weight.bfloat16().float(), bias, gelu, residual)
    assert (bf16 - expected).abs().max().item() > 10 * (got.double() - expected).abs().max().item()


def test_leading_dimensions_are_kept() -> None:
    g = torch.Generator().manual_seed(1)
    x, weight = torch.randn(2, 5, 64, generator=g), torch.randn(32, 64, generator=g) / 8
    residual = torch.randn(2, 5, 32, generator=g)
    got = amx_linear_bf16x3(x, amx_pack_bf16x3(weight), None, False, residual)
    assert got.shape == (2, 5, 32)
    assert torch.allclose(got.double(), _reference(x, weight, None, False, residual), atol=2e-5)


def test_bad_inputs_are_refused_by_name() -> None:
    weight = torch.randn(64, 96)
    packed = amx_pack_bf16x3(weight)
    with pytest.raises(RuntimeError, match="multiples of 32"):
        amx_pack_bf16x3(torch.randn(40, 96))
    with pytest.raises(RuntimeError, match="float32"):
        amx_pack_bf16x3(weight.double())
    with pytest.raises(RuntimeError, match=r"x must be float32 \[\.\.\., 96\]"):
        amx_linear_bf16x3(torch.randn(4, 64), packed)
    with pytest.raises(RuntimeError, match="bias must be float32 \\[64\\]"):
        amx_linear_bf16x3(torch.randn(4, 96), packed, torch.randn(32))
    with pytest.raises(RuntimeError, match="residual must be float32"):
        amx_linear_bf16x3(torch.randn(4, 96), packed, None, False, torch.randn(4, 32))
    with pytest.raises(RuntimeError, match="amx_pack_bf16x3"):
        amx_linear_bf16x3(torch.randn(4, 96), weight.bfloat16())


def _mlp_reference(x, up, up_bias, down, down_bias, residual):
    return _reference(_reference(x, up, up_bias, True, None), down, down_bias, False, residual)


@pytest.mark.parametrize(
    ("rows", "features", "hidden"),
    [(1, 64, 96), (33, 384, 1536), (300, 96, 160), (1000, 64, 256), (129, 768, 3072)],
)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("with_biases", "with_residual"), [(True, True), (False, False)])
def test_fused_gelu_mlp_equals_the_float64_block(rows, features, hidden, threads, with_biases, with_residual) -> None:
    g = torch.Generator().manual_seed(rows + hidden)
    x = torch.randn(rows, features, generator=g) * 3
    up, down = torch.randn(hidden, features, generator=g) * features**-0.5, torch.randn(features, hidden, generator=g)
    down *= hidden**-0.5
    up_bias, down_bias = (
        (torch.randn(hidden, generator=g), torch.randn(features, generator=g)) if with_biases else (None, None)
    )
    residual = torch.randn(rows, features, generator=g) if with_residual else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread takes every group of rows; two split them
    try:
        got = amx_gelu_mlp_bf16x3(x, amx_pack_bf16x3(up), up_bias, amx_pack_bf16x3(down), down_bias, residual)
    finally:
        torch.set_num_threads(before)
    expected = _mlp_reference(x, up, up_bias, down, down_bias, residual)
    assert got.dtype == torch.float32 and got.shape == (rows, features)
    assert (got.double() - expected).abs().max().item() <= 3e-5 * expected.abs().max().item()


def test_fused_gelu_mlp_refuses_mismatched_linears_by_name() -> None:
    up, down = amx_pack_bf16x3(torch.randn(128, 64)), amx_pack_bf16x3(torch.randn(64, 128))
    x = torch.randn(4, 64)
    with pytest.raises(RuntimeError, match=r"down must take the up linear's 128 outputs"):
        amx_gelu_mlp_bf16x3(x, up, None, amx_pack_bf16x3(torch.randn(64, 96)), None)
    with pytest.raises(RuntimeError, match=r"down_bias must be float32 \[64\]"):
        amx_gelu_mlp_bf16x3(x, up, None, down, torch.randn(128))
    with pytest.raises(RuntimeError, match=r"residual must be float32 \[4, 64\]"):
        amx_gelu_mlp_bf16x3(x, up, None, down, None, torch.randn(4, 128))
    with pytest.raises(RuntimeError, match=r"x must be float32 \[\.\.\., 64\]"):
        amx_gelu_mlp_bf16x3(torch.randn(4, 128), up, None, down, None)


@pytest.mark.parametrize("rows", [3, 700])  # below and above the rows per thread worth one fused call
def test_gelu_mlp_on_amx_layers_equals_the_float64_block(rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    up, down = nn.Linear(384, 1536), nn.Linear(1536, 384)
    mlp = GeluMlp(Linear(up, act="gelu", kernel="amx-bf16x3"), Linear(down, kernel="amx-bf16x3"))
    assert mlp.fused
    x, residual = torch.randn(2, rows, 384, generator=g), torch.randn(2, rows, 384, generator=g)
    with torch.inference_mode():
        got = mlp(x, residual=residual)
    expected = _mlp_reference(x, up.weight, up.bias, down.weight, down.bias, residual)
    assert got.shape == (2, rows, 384)
    assert (got.double() - expected).abs().max().item() <= 3e-5 * expected.abs().max().item()


def test_gelu_mlp_needs_a_gelu_up_and_a_plain_down_linear() -> None:
    up, down = nn.Linear(64, 128), nn.Linear(128, 64)
    with pytest.raises(ValueError, match="act='gelu'"):
        GeluMlp(Linear(up), Linear(down))
    assert not GeluMlp(Linear(up, act="gelu", kernel="aten"), Linear(down, kernel="amx-bf16x3")).fused
