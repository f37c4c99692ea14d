"""taskhub.native: the skinny linear kernel computes x @ (W * scales).T + b (float64 reference) for every
weight dtype, row count, ragged shape and under torch.compile; it can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from taskhub.cpu_info import cpu_info
from taskhub.native import native_ops_available, skinny_linear

pytestmark = pytest.mark.skipif(not cpu_info().avx512, reason="the skinny kernel needs AVX-512")


def test_the_kernel_builds_on_an_avx512_cpu() -> None:
    assert native_ops_available()


def _case(weight_dtype: torch.dtype, x_dtype: torch.dtype, rows: int, features: int, outputs: int):
    g = torch.Generator().manual_seed(rows * 1000 + features + outputs)
    x = torch.randn(2, rows, features, generator=g).to(x_dtype)
    w = torch.randn(outputs, features, generator=g)
    scales = None
    if weight_dtype == torch.int8:
        scales = w.abs().amax(dim=1) / 127
        w = torch.round(w / scales[:, None]).to(torch.int8)
    else:
        w = w.to(weight_dtype)
    bias = torch.randn(outputs, generator=g)
    return x, w, scales, bias


@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8])  # x holds 2 x rows rows: one to three passes of 8
@pytest.mark.parametrize(("features", "outputs"), [(96, 72), (200, 13), (64 * 3 + 17, 9)])  # ragged lines and blocks
def test_skinny_linear_equals_the_float64_product(
    weight_dtype: torch.dtype, x_dtype: torch.dtype, rows: int, features: int, outputs: int
) -> None:
    x, w, scales, bias = _case(weight_dtype, x_dtype, rows, features, outputs)
    dequantized = w.double() * (1 if scales is None else scales.double()[:, None])
    expected = x.double() @ dequantized.T + bias.double()  # the same (rounded) inputs, exact products
    got = skinny_linear(x, w, scales, bias)
    assert got.dtype == x_dtype and got.shape == (2, rows, outputs)
    tolerance = 1e-5 if x_dtype == torch.float32 else 8e-3  # fp32 sums; bf16 output rounding (2^-8)
    scale = expected.abs().clamp_min(1.0)
    assert ((got.double() - expected).abs() / scale).max() < tolerance


@pytest.mark.parametrize("rows", [9, 19, 32, 33])  # fp32 weights past 8 rows run in tiles of 4 rows: remainders 1-3
def test_fp32_tiles_of_many_rows_equal_the_float64_product(rows: int) -> None:
    x, w, _, bias = _case(torch.float32, torch.float32, rows, 200, 13)
    expected = x.double() @ w.double().T + bias.double()
    assert ((skinny_linear(x, w, None, bias).double() - expected).abs() / expected.abs().clamp_min(1.0)).max() < 1e-5


def test_no_bias_no_scales_and_empty_input() -> None:
    x, w, _, _ = _case(torch.float32, torch.float32, 3, 96, 72)
    assert torch.allclose(skinny_linear(x, w), x @ w.T, atol=1e-4, rtol=1e-5)
    assert skinny_linear(x[:, :0], w).shape == (2, 0, 72)


def test_bad_shapes_and_dtypes_are_refused_naming_them() -> None:
    x, w, _, _ = _case(torch.float32, torch.float32, 1, 96, 72)
    with pytest.raises(RuntimeError, match="x has 95 features, the weight 96"):
        skinny_linear(x[..., :95], w)
    with pytest.raises(RuntimeError, match="weight dtype must be float32, bfloat16 or int8"):
        skinny_linear(x, w.half())
    with pytest.raises(RuntimeError, match="one value per output"):
        skinny_linear(x, w, None, torch.zeros(71))


def test_skinny_linear_under_torch_compile_equals_eager() -> None:
    x, w, scales, bias = _case(torch.int8, torch.bfloat16, 2, 96, 72)
    compiled = torch.compile(lambda a: skinny_linear(a * 2, w, scales, bias) + 1, fullgraph=True)
    assert torch.equal(compiled(x), skinny_linear(x * 2, w, scales, bias) + 1)


def test_switched_off_by_the_environment() -> None:
    code = "from taskhub.native import native_ops_available as a; print(a())"
    env = {**os.environ, "TASKHUB_NATIVE_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
