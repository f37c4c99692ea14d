"""taskhub.cpu_kernels: every linear kernel computes the layer (float64 reference), chosen ones come from the candidates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from taskhub.cpu_kernels import (
    KERNELS,
    Linear,
    aten_linear,
    cpu_info,
    cpu_linear,
    fused_linear_available,
    int8_linear,
    int8pack_linear,
    linear_options,
    onednn_linear,
    skinny_plain_linear,
    smoothing_factors,
)
from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource
from taskhub.native import amx_bf16x3_available

ONEDNN = fused_linear_available(torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_chosen_cpu_linear_kernel_computes_the_linear_layer(dtype: torch.dtype, rows: int) -> None:
    g = torch.Generator().manual_seed(3)
    x, w, b = (torch.randn(*shape, generator=g).to(dtype) for shape in ((2, rows, 96), (72, 96), (72,)))
    expected = (x.double() @ w.double().T + b.double()).float()  # the same (rounded) inputs, exact products
    fn = cpu_linear(dtype, 2 * rows)
    assert fn in (aten_linear, onednn_linear, skinny_plain_linear)
    for kernel in (fn, aten_linear, onednn_linear):
        got = kernel(x, w, b).float()
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("rows", [1, 20, 40])  # decode step, small batch, prompt
def test_chosen_int8_kernel_computes_the_weight_only_int8_layer(rows: int) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(rows, 96, generator=g).bfloat16()
    codes = torch.randint(-127, 128, (72, 96), generator=g, dtype=torch.int8)
    scales = (torch.rand(72, generator=g) / 50).bfloat16()
    expected = x.double() @ (codes.double() * scales.double()[:, None]).T  # the same (rounded) inputs, exact
    for kernel in (int8_linear(rows), int8pack_linear):
        got = kernel(x, codes, scales)
        assert got.dtype == torch.bfloat16 and got.shape == (rows, 72)
        assert (got.double() - expected).norm() / expected.norm() < 4e-3  # bf16 rounding: 2^-9 = 2e-3


def _layer_and_inputs(dtype: torch.dtype) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(96, 64)  # multiples of 32: every kernel, AMX's included, takes it
    with torch.no_grad():
        layer.weight.copy_(torch.randn(64, 96, generator=g) * 0.1)
        layer.bias.copy_(torch.randn(64, generator=g))
    x = torch.randn(3, 7, 96, generator=g)
    residual = torch.randn(3, 7, 64, generator=g)
    return layer.to(dtype).requires_grad_(False), x.to(dtype), residual.to(dtype)


def _reference(layer: nn.Linear, x: torch.Tensor, act: str, residual: torch.Tensor | None) -> torch.Tensor:
    """The layer in float64 from the same (rounded) weights and inputs: erf GELU, then the residual."""
    y = x.double() @ layer.weight.double().T + layer.bias.double()
    y = 0.5 * y * (1 + torch.erf(y / 2**0.5)) if act == "gelu" else y
    return y if residual is None else y + residual.double()


@pytest.mark.parametrize("kernel", [None, *KERNELS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("act", "with_residual"), [("none", False), ("gelu", False), ("none", True)])
def test_every_fused_linear_kernel_computes_the_layer(
    kernel: str | None, dtype: torch.dtype, act: str, with_residual: bool
) -> None:
    if kernel not in (None, "aten", "amx-bf16x3") and not ONEDNN:
        pytest.skip("this torch build has no oneDNN linear")
    if kernel == "amx-bf16x3" and not (dtype == torch.float32 and amx_bf16x3_available()):
        pytest.skip("the AMX bf16x3 kernel takes fp32 on CPUs with AMX")
    layer, x, residual = _layer_and_inputs(dtype)
    linear = Linear(layer, act, kernel=kernel)
    assert linear.kernel_name == (kernel or linear.kernel_name) and linear.kernel_name in KERNELS
    with torch.inference_mode():
        got = linear(x, residual if with_residual else None)
    expected = _reference(layer, x, act, residual if with_residual else None)
    assert got.dtype == dtype and got.shape == expected.shape
    tolerance = {"atol": 1e-4, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
    assert torch.allclose(got.double(), expected, **tolerance)


@pytest.mark.parametrize(("act", "with_residual"), [("none", False), ("gelu", False), ("none", True)])
def test_int8_linear_stays_close_to_the_float_layer(act: str, with_residual: bool) -> None:
    layer, x, residual = _layer_and_inputs(torch.float32)
    linear = Linear(layer, act, quantize="int8")
    assert linear.kernel_name == "int8-dynamic"
    with torch.inference_mode():
        got = linear(x, residual if with_residual else None)
    expected = _reference(layer, x, act, residual if with_residual else None)
    cosine = torch.nn.functional.cosine_similarity(got.double().flatten(0, 1), expected.flatten(0, 1), dim=-1)
    assert cosine.min() >= 0.999
    assert not torch.allclose(got.double(), expected, atol=1e-5)  # really quantized, not the float path


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected).norm() / expected.norm()).item()


def test_int8_scales_each_token_on_its_own() -> None:
    """Tokens 100x apart in range: per-token scales keep the small ones (a batch-wide scale would flatten them)."""
    layer, x, _ = _layer_and_inputs(torch.float32)
    x = x.clone()
    x[0, 0] *= 100
    linear = Linear(layer, quantize="int8")
    with torch.inference_mode():
        got = linear(x)
    expected = _reference(layer, x, "none", None)
    for token in [(0, 1), (1, 3), (2, 6)]:  # ordinary tokens next to the huge one
        assert _relative_error(got[token], expected[token]) < 0.02


def test_int8_smoothing_tames_an_outlier_input_channel() -> None:
    """SmoothQuant: one input channel 60x the others; smoothing factors from its range cut the int8 error."""
    layer, x, _ = _layer_and_inputs(torch.float32)
    x = x.clone()
    x[..., 5] *= 60
    smooth = smoothing_factors(x.abs().flatten(0, 1).amax(dim=0), layer.weight)
    with torch.inference_mode():
        plain, smoothed = Linear(layer, quantize="int8")(x), Linear(layer, quantize="int8", smooth=smooth)(x)
    expected = _reference(layer, x, "none", None)
    assert _relative_error(smoothed, expected) < 0.5 * _relative_error(plain, expected)
    assert _relative_error(smoothed, expected) < 0.01


def test_int8_row_with_one_huge_weight_runs_in_fp32() -> None:
    """A wide row whose int8 weights would lose most of their detail to one huge entry (MiniLM's FFN output
    has such rows) is computed in fp32; the other rows stay int8."""
    g = torch.Generator().manual_seed(2)
    layer = nn.Linear(1536, 16).requires_grad_(False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(16, 1536, generator=g) * 0.1)
        layer.weight[3, 10] = 8.0
    x = torch.randn(5, 1536, generator=g)
    with torch.inference_mode():
        got = Linear(layer, quantize="int8")(x)
    expected = _reference(layer, x, "none", None)
    assert torch.allclose(got[:, 3].double(), expected[:, 3], atol=1e-4)  # exact: fp32
    assert not torch.allclose(got[:, 4].double(), expected[:, 4], atol=1e-4)  # int8
    assert _relative_error(got, expected) < 0.02


def test_stacked_linear_is_the_concatenation_of_its_parts() -> None:
    parts = [nn.Linear(32, n).requires_grad_(False) for n in (8, 16, 8)]
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = Linear.stacked(parts)(x)
        expected = torch.cat([p(x) for p in parts], dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_unknown_kernel_activation_and_quantize_are_refused() -> None:
    layer = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="onednn-packed"):
        Linear(layer, kernel="fastest")
    with pytest.raises(ValueError, match="gelu"):
        Linear(layer, act="relu")
    with pytest.raises(ValueError, match="int8"):
        Linear(layer, quantize="int4")
    with pytest.raises(ValueError, match="quantized"):
        Linear(layer, smooth=torch.ones(8))
    with pytest.raises(ValueError, match="highest"):
        Linear(layer, precision="medium")


@pytest.mark.skipif(not amx_bf16x3_available(), reason="needs a CPU with AMX")
def test_precision_highest_keeps_fp32_layers_off_the_amx_kernel() -> None:
    layer, _, _ = _layer_and_inputs(torch.float32)
    with pytest.raises(ValueError, match="not available here"):
        Linear(layer, kernel="amx-bf16x3", precision="highest")
    assert Linear(layer, precision="highest").kernel_name != "amx-bf16x3"


def test_linear_options_are_checked() -> None:
    def source(**options: object) -> ModelSource:
        return ModelSource(model_id="m", path=Path("."), options=dict(options))

    assert linear_options(source(kernel="aten", quantize="int8"), fused=True) == ("aten", "int8", "high")
    assert linear_options(source(matmul_precision="highest"), fused=False) == (None, None, "highest")
    assert linear_options(source(), fused=False) == (None, None, "high")
    with pytest.raises(ModelNotAvailableError, match="highest"):
        linear_options(source(matmul_precision="low"), fused=True)
    with pytest.raises(ModelNotAvailableError, match="needs matmul_precision high"):
        linear_options(source(kernel="amx-bf16x3", matmul_precision="highest"), fused=True)
    if amx_bf16x3_available():
        assert linear_options(source(kernel="amx-bf16x3"), fused=True).kernel == "amx-bf16x3"
    else:
        with pytest.raises(ModelNotAvailableError, match="needs a CPU with AMX"):
            linear_options(source(kernel="amx-bf16x3"), fused=True)
    with pytest.raises(ModelNotAvailableError, match="onednn-packed"):
        linear_options(source(kernel="mkl"), fused=True)
    with pytest.raises(ModelNotAvailableError, match="int8"):
        linear_options(source(quantize="int4"), fused=True)
    with pytest.raises(ModelNotAvailableError, match="fused encoder on the CPU"):
        linear_options(source(quantize="int8"), fused=False)


def test_cpu_info_reads_model_and_extensions(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n"
    )
    info = cpu_info(cpuinfo)
    assert (info.model, info.amx, info.avx512_bf16, info.vnni) == ("AMD EPYC 9R14", False, True, True)
    assert info.line() == "AMD EPYC 9R14; AVX512-BF16, VNNI"
    assert cpu_info(tmp_path / "missing").model == "unknown"


def test_import_taskhub_does_not_import_torch() -> None:
    code = "import sys, taskhub; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
