"""CPU matmul kernels the plugins share: linear layers run on the kernel measured fastest on this CPU.

Public API for plugins (docs/plugins.md). Which library multiplies fastest depends on the CPU and the
shape: oneDNN with its bias / GELU / residual epilogue fused and its weights pre-packed won at encoder
shapes on an Intel Xeon with AMX, plain oneDNN beat MKL's sgemv ~2.5x at decode shapes on an AMD EPYC
but lost to it for bf16 on the Xeon. So nothing here is chosen by CPU name: the first layer of each
kind in a process times the candidates on its own shape and keeps the fastest. At decode rows taskhub's
own skinny kernel (taskhub.native) runs where it can: see `cpu_linear` for why that one is a table.

Importing this module imports torch; `import taskhub` does not import this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_info import CpuInfo, cpu_info
from .errors import ModelNotAvailableError
from .models import ModelSource
from .native import (
    SKINNY_FP32_MAX_ROWS,
    SKINNY_INT8_MAX_ROWS,
    SKINNY_MAX_ROWS,
    amx_bf16x3_available,
    amx_gelu_mlp_bf16x3,
    amx_linear_bf16x3,
    amx_pack_bf16x3,
    native_ops_available,
    skinny_linear,
)

__all__ = [
    "KERNELS",
    "PRECISIONS",
    "QUANTIZE",
    "CpuInfo",
    "GeluMlp",
    "Int8LinearFn",
    "Linear",
    "LinearOptions",
    "LinearFn",
    "aten_linear",
    "cpu_info",
    "cpu_linear",
    "fused_linear_available",
    "int8_linear",
    "linear_options",
    "onednn_linear",
    "smoothing_factors",
]

LinearFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
SMALL_M = 16  # cpu_linear: rows up to this many (decode steps, small batches) are timed apart from prefill
PROBE_ROWS = 512  # Linear: rows of the random input its kernels are timed on (a batch of ~8-16 sentences)
KERNELS = ("aten", "onednn", "onednn-packed", "amx-bf16x3")  # Linear(kernel=...): forced instead of measured
# Linear(precision=...), torch's names for float32 matmuls: "highest" IEEE fp32 products only; "high" also
# lets fp32 layers run on AMX as three bf16 products (relative error ~4e-6, torch's "bf16x3")
PRECISIONS = ("high", "highest")
QUANTIZE = ("int8",)  # Linear(quantize=...): dynamic int8 (weights per output channel, activations per token)
OUTLIER_ROW_ERROR = 0.03  # int8 Linear: output rows losing more than this share of their weights' norm run in fp32
FUSED_MLP_ROWS_PER_THREAD = 64  # GeluMlp: fewer rows per thread run as two calls (each splits columns instead)
SMOOTH_ALPHA = 0.6  # smoothing_factors: how much of an input channel's range moves into the weights


def _onednn_op() -> torch._ops.OpOverloadPacket | None:
    """oneDNN's fused linear (a private op of CPU builds with mkldnn: checked, not assumed)."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


_ONEDNN = _onednn_op()


def fused_linear_available(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN linear kernels exist here for this device and dtype (CPU fp32 / bf16 in builds with mkldnn)."""
    return device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and _ONEDNN is not None


def _fastest(candidates: dict[str, Callable[[], object]], sweeps: int = 3) -> str:
    """Name of the candidate with the best time, after one warm-up call each; sweeps interleave the
    candidates so a change in machine load hits them alike."""
    best = dict.fromkeys(candidates, float("inf"))
    with torch.inference_mode():
        for run in candidates.values():
            run()
        for _ in range(sweeps):
            for name, run in candidates.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.__getitem__)


# ---- plain linear (the decoder's layers): the faster of MKL (aten) and oneDNN at decode or prefill rows


def aten_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, w, b)


def onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    assert _ONEDNN is not None
    return _ONEDNN(x, w, b, "none", [], "")


def skinny_plain_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return skinny_linear(x, w, None, b)


_PLAIN: dict[tuple[torch.dtype, bool], LinearFn] = {}


def _choose_plain(dtype: torch.dtype, small: bool) -> LinearFn:
    """Times aten and oneDNN on 4 distinct 2048 x 2048 weights (bigger than L2 together) with 1 or 64 rows."""
    if _ONEDNN is None:
        return aten_linear
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(2048, 2048, generator=gen).to(dtype) for _ in range(4)]
    x = torch.randn(1 if small else 64, 2048, generator=gen).to(dtype)
    kernels: dict[str, LinearFn] = {"aten": aten_linear, "onednn": onednn_linear}

    def sweep(fn: LinearFn) -> Callable[[], object]:
        return lambda: [fn(x, w, None) for w in weights]

    return kernels[_fastest({name: sweep(fn) for name, fn in kernels.items()})]


def cpu_linear(dtype: torch.dtype, rows: int) -> LinearFn:
    """The linear kernel for fp32/bf16 CPU inputs with `rows` rows.

    Up to SKINNY_MAX_ROWS rows (SKINNY_FP32_MAX_ROWS in fp32): taskhub's skinny kernel where it runs. That is a table, not a probe: a decode
    step streams a whole model's weights, which no cache holds, and there the skinny kernel measured 1.0-2x
    torch's kernels (docs/performance.md, "Round 5: taskhub's skinny linear kernel"); a probe small enough
    to run at load time sits in the cache, where oneDNN's bf16 AMX kernel wins instead. More rows: the faster of aten and
    oneDNN, timed once per process for up to SMALL_M rows and for more. Under torch.compile (which cannot
    time kernels while tracing) those are F.linear: inductor picks its own kernels."""
    if rows <= (SKINNY_FP32_MAX_ROWS if dtype == torch.float32 else SKINNY_MAX_ROWS) and native_ops_available():
        return skinny_plain_linear
    if torch.compiler.is_compiling():
        return aten_linear
    key = (dtype, rows <= SMALL_M)
    if key not in _PLAIN:
        _PLAIN[key] = _choose_plain(*key)
    return _PLAIN[key]


# ---- weight-only int8 linear (the decoder's `quantize: int8`): the skinny kernel or torch's int8 weight-pack GEMM

Int8LinearFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def int8pack_linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [rows, in] bf16 @ (codes [out, in] int8 * scales [out] bf16).T in bf16 (torch's int8 weight-pack kernel)."""
    return torch.ops.aten._weight_int8pack_mm(x, codes, scales)


def skinny_int8_linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return skinny_linear(x, codes, scales, None)


def dequantized_int8_linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8pack_linear for prefill rows: the weight dequantized to bf16 for this call (each weight rounded to
    bf16, as a bf16 model's are) and torch's bf16 GEMM (AMX / AVX512-BF16)."""
    return F.linear(x, codes.to(x.dtype) * scales[:, None].to(x.dtype))


def int8_linear(rows: int) -> Int8LinearFn:
    """The weight-only int8 kernel for `rows` bf16 rows, by a table measured on SmolLM2's weights
    (docs/performance.md, "Round 5"): the skinny kernel up to SKINNY_INT8_MAX_ROWS rows where it runs (1.6x
    torch's int8 weight-pack kernel at 1 to 32 rows), torch's kernel there otherwise; more rows (a prompt)
    dequantize to bf16 (4.8x torch's int8 kernel at 256 rows, equal to the skinny kernel at 64)."""
    if rows > SKINNY_INT8_MAX_ROWS:
        return dequantized_int8_linear
    return skinny_int8_linear if native_ops_available() else int8pack_linear


# ---- fused linear (the encoders' layers): y = act(x @ W.T + b) (+ residual)


class _Kernel:
    """One way to compute a Linear's output; built from the layer's weights once."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> None:
        self.weight, self.bias, self.act = weight, bias, act

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        y = F.gelu(y) if self.act == "gelu" else y
        return y if residual is None else y + residual


class _OneDNN(_Kernel):
    """oneDNN with the epilogue fused; `packed` reorders the weight once into oneDNN's blocked layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str, packed: bool) -> None:
        super().__init__(weight, bias, act)
        if packed:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PROBE_ROWS)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        assert _ONEDNN is not None
        if residual is not None and self.act == "none":
            return _ONEDNN.binary(x, residual, self.weight, self.bias, "add")
        y = _ONEDNN(x, self.weight, self.bias, self.act, [], "none" if self.act == "gelu" else "")
        return y if residual is None else y + residual


class _AmxBf16x3(_Kernel):
    """fp32 on AMX tiles, each product hi*hi + hi*lo + lo*hi of the numbers' bf16 parts (taskhub.native);
    weights split and packed once, bias, GELU and the residual add applied as each output block is written."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> None:
        super().__init__(weight, bias, act)
        self.packed = amx_pack_bf16x3(weight.detach())

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        return amx_linear_bf16x3(x, self.packed, self.bias, self.act == "gelu", residual)


def _amx_bf16x3_fits(weight: torch.Tensor) -> bool:
    """The AMX bf16x3 kernel runs here for this weight: fp32 on a CPU with AMX, both sides multiples of 32."""
    out_features, in_features = weight.shape
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and out_features % 32 == 0
        and in_features % 32 == 0
        and amx_bf16x3_available()
    )


class _Int8Dynamic(_Kernel):
    """Dynamic int8 on oneDNN's int8 linear (AMX / VNNI where the CPU has them), fp32 out.

    Weights are symmetric per output channel. Activations are quantized per token (each row's [min, max]
    onto uint8 0..255, two vectorized passes; torch's `quantize_per_channel` took longer than the GEMM)
    and the GEMM runs on the raw codes; each row's step and shift are undone on the output together
    with the bias (one rank-2 update).
    One scale for the whole batch, as torch's dynamic linear does, cost MiniLM most of its accuracy
    (tokens differ ~10x in range). `smooth` (SmoothQuant) divides input channel j by smooth[j] and
    multiplies the weight's column j by it, moving outlier channels' range into the weights. Output rows
    whose int8 weights lose more than OUTLIER_ROW_ERROR of their norm (one huge weight in a row) run in
    fp32. Measured per-layer errors and speeds: docs/performance.md, "Encoders"."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str, smooth: torch.Tensor | None) -> None:
        super().__init__(weight, bias, act)
        if not _int8_linear_available():
            raise ValueError("quantize='int8' needs oneDNN's int8 linear (torch.ops.onednn.qlinear_pointwise)")
        w = weight.detach().float()  # [out, in]
        bias_fp32 = torch.zeros(w.shape[0]) if bias is None else bias.detach().float()
        self.inverse_smooth = None if smooth is None else 1 / smooth.float()  # [in]
        smoothed = w if smooth is None else w * smooth.float()
        self.weight_scales = smoothed.abs().amax(dim=1).clamp_min(1e-8) / 127  # [out]
        codes = torch.round(smoothed / self.weight_scales[:, None]).clamp(-127, 127)
        dequantized = codes * self.weight_scales[:, None]
        lost = (dequantized - smoothed).norm(dim=1) / smoothed.norm(dim=1).clamp_min(1e-12)
        self.fp32_rows = (lost > OUTLIER_ROW_ERROR).nonzero().squeeze(1)  # [k]
        self.fp32_row_weight, self.fp32_row_bias = w[self.fp32_rows], bias_fp32[self.fp32_rows]
        # [2, out]: y = (codes @ W.T) / steps + [low, 1] @ this (each row's shift, then the bias)
        self.shift_and_bias = torch.stack([dequantized.sum(dim=1), bias_fp32])
        self.packed = torch.ops.onednn.qlinear_prepack(codes.to(torch.int8), [PROBE_ROWS, w.shape[1]])
        self.weight_zero_points = torch.zeros(w.shape[0], dtype=torch.long)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()  # [N, in]
        scaled = rows * self.inverse_smooth if self.inverse_smooth is not None else rows
        low, high = torch.aminmax(scaled, dim=1, keepdim=True)  # [N, 1] each
        steps = 255 / (high - low).clamp_min_(1e-8)  # [N, 1]: codes per unit of this row
        # codes = round((x - low) * steps) in [0, 255], rounded by adding 0.5 before the truncating cast
        codes = torch.addcmul(0.5 - low * steps, scaled, steps).to(torch.uint8)  # [N, in]
        y = torch.ops.onednn.qlinear_pointwise(
            codes,
            1.0,
            0,
            self.packed,
            self.weight_scales,
            self.weight_zero_points,
            None,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )  # [N, out]: codes @ dequantized W.T
        # in place: on small CPUs a fresh [N, out] buffer costs as much as a pass over it
        y.mul_(1 / steps).addmm_(torch.cat([low, torch.ones_like(low)], dim=1), self.shift_and_bias)
        if len(self.fp32_rows):
            y[:, self.fp32_rows] = F.linear(rows, self.fp32_row_weight, self.fp32_row_bias)
        y = y.view(*x.shape[:-1], -1).to(x.dtype)
        if self.act == "gelu":
            y = torch.ops.aten.gelu_(y)
        return y if residual is None else y.add_(residual)


def _int8_linear_available() -> bool:
    """oneDNN's int8 linear exists in this torch build (a private op of CPU builds with mkldnn: checked)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def smoothing_factors(input_max: torch.Tensor, weight: torch.Tensor, alpha: float = SMOOTH_ALPHA) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors max|X_j|^alpha / max|W_j|^(1 - alpha), for `Linear(smooth=...)`:
    `input_max` [in] is each input channel's largest magnitude on calibration inputs, `weight` [out, in]."""
    activations = input_max.float().clamp_min(1e-5)
    weights = weight.detach().float().abs().amax(dim=0).clamp_min(1e-5)
    return (activations**alpha / weights ** (1 - alpha)).clamp_min(1e-5)


def _candidates(weight: torch.Tensor, bias: torch.Tensor | None, act: str, precision: str) -> dict[str, _Kernel]:
    kernels = {"aten": _Kernel(weight, bias, act)}
    if fused_linear_available(weight.device, weight.dtype):
        kernels["onednn"] = _OneDNN(weight, bias, act, packed=False)
        kernels["onednn-packed"] = _OneDNN(weight, bias, act, packed=True)
    if precision == "high" and _amx_bf16x3_fits(weight):
        kernels["amx-bf16x3"] = _AmxBf16x3(weight, bias, act)
    return kernels


_FUSED: dict[tuple[torch.dtype, int, int, str, str], str] = {}  # (dtype, in, out, act, precision) -> winner here


def _choose_fused(kernels: dict[str, _Kernel], key: tuple[torch.dtype, int, int, str, str]) -> str:
    """The fastest of `kernels` for this layer shape, timed on PROBE_ROWS random rows once per process."""
    if key not in _FUSED:
        dtype, features = key[:2]
        x = torch.randn(PROBE_ROWS, features, generator=torch.Generator().manual_seed(0)).to(dtype)

        def run(kernel: _Kernel) -> Callable[[], object]:
            return lambda: kernel(x, None)

        _FUSED[key] = _fastest({name: run(kernel) for name, kernel in kernels.items()})
    return _FUSED[key]


class Linear(nn.Module):
    """y = act(x @ W.T + b) (+ residual) with `act` "none" or "gelu" (erf GELU), on the kernel measured
    fastest here for this shape and dtype, or the one named by `kernel` (one of KERNELS). fp32 layers
    with `precision="high"` (the default) may also run as three bf16 products on AMX; "highest" keeps
    IEEE fp32 products. `quantize="int8"` runs dynamic int8 instead (fp32 in and out), with input channels
    divided by `smooth` (see `smoothing_factors`) if given."""

    def __init__(
        self,
        source: nn.Linear,
        act: str = "none",
        kernel: str | None = None,
        quantize: str | None = None,
        smooth: torch.Tensor | None = None,
        precision: str = "high",
    ):
        super().__init__()
        if act not in ("none", "gelu"):
            raise ValueError(f"Unknown activation {act!r}; expected 'none' or 'gelu'")
        if quantize not in (None, *QUANTIZE):
            raise ValueError(f"Unknown quantize {quantize!r}; expected None or one of {', '.join(QUANTIZE)}")
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        if smooth is not None and quantize is None:
            raise ValueError("smooth only applies to quantized linears (quantize='int8')")
        self.weight = source.weight  # [out, in]
        self.bias = source.bias  # [out]
        self.act = act
        self._kernel: _Kernel
        if quantize == "int8":
            self.kernel_name, self._kernel = "int8-dynamic", _Int8Dynamic(self.weight, self.bias, act, smooth)
            return
        kernels = _candidates(self.weight, self.bias, act, precision)
        if kernel is not None and kernel not in kernels:
            raise ValueError(f"Kernel {kernel!r} is not available here; expected one of {', '.join(kernels)}")
        key = (self.weight.dtype, source.in_features, source.out_features, act, precision)
        self.kernel_name = kernel or (_choose_fused(kernels, key) if len(kernels) > 1 else "aten")
        self._kernel = kernels[self.kernel_name]

    @classmethod
    def stacked(
        cls,
        parts: list[nn.Linear],
        act: str = "none",
        kernel: str | None = None,
        quantize: str | None = None,
        smooth: torch.Tensor | None = None,
        precision: str = "high",
    ) -> Linear:
        """One linear computing several (query, key, value) side by side: out = concat of theirs."""
        first = parts[0]
        joined = nn.Linear(first.in_features, sum(p.out_features for p in parts), device=first.weight.device)
        joined.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        joined.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
        return cls(joined, act, kernel, quantize, smooth, precision)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self._kernel(x, residual)


class GeluMlp(nn.Module):
    """A transformer's feed-forward block, down(GELU(up(x))) (+ residual), on two `Linear`s (`up` made with
    act="gelu"). Where both run on AMX bf16x3 and each thread gets FUSED_MLP_ROWS_PER_THREAD rows or more, one
    native call carries each group of rows through both: the GELU output stays in the thread's cache as the
    second linear's bf16 parts instead of going to memory in fp32 and being split again (1.15-1.3x the two
    calls at MiniLM and ViT-base shapes, docs/performance.md, "Round 8")."""

    def __init__(self, up: Linear, down: Linear) -> None:
        super().__init__()
        if up.act != "gelu" or down.act != "none":
            raise ValueError(f"GeluMlp needs up with act='gelu' and down with act='none', got {up.act!r}, {down.act!r}")
        self.up, self.down = up, down
        self.fused = isinstance(up._kernel, _AmxBf16x3) and isinstance(down._kernel, _AmxBf16x3)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if self.fused and rows >= FUSED_MLP_ROWS_PER_THREAD * torch.get_num_threads():
            up, down = self.up._kernel, self.down._kernel
            assert isinstance(up, _AmxBf16x3) and isinstance(down, _AmxBf16x3)
            return amx_gelu_mlp_bf16x3(x, up.packed, up.bias, down.packed, down.bias, residual)
        return self.down(self.up(x), residual)


class LinearOptions(NamedTuple):
    """A loader's model options for `Linear`: forced kernel, quantization and fp32 matmul precision."""

    kernel: str | None
    quantize: str | None
    precision: str


def linear_options(source: ModelSource, fused: bool) -> LinearOptions:
    """A loader's `options.kernel`, `options.quantize` and `options.matmul_precision`, checked: kernel and
    quantize need a model whose linears run on `Linear` (`fused`) on the CPU."""
    kernel, quantize = source.options.get("kernel"), source.options.get("quantize")
    precision = source.options.get("matmul_precision", "high")
    if kernel not in (None, *KERNELS):
        raise ModelNotAvailableError(f"Unknown kernel option {kernel!r}; expected one of {', '.join(KERNELS)}.")
    if quantize not in (None, *QUANTIZE):
        raise ModelNotAvailableError(f"Unknown quantize option {quantize!r}; expected none, {', '.join(QUANTIZE)}.")
    if precision not in PRECISIONS:
        raise ModelNotAvailableError(
            f"Unknown matmul_precision option {precision!r}; expected one of {', '.join(PRECISIONS)}."
        )
    if kernel == "amx-bf16x3" and precision == "highest":
        raise ModelNotAvailableError("Model option kernel: amx-bf16x3 needs matmul_precision high, not highest.")
    if kernel == "amx-bf16x3" and not amx_bf16x3_available():
        raise ModelNotAvailableError(
            f"Model option kernel: amx-bf16x3 needs a CPU with AMX and taskhub's native ops; this one is {cpu_info().line()}."
        )
    if quantize and not _int8_linear_available():
        raise ModelNotAvailableError(
            "quantize: int8 needs a torch CPU build with oneDNN's int8 linear; this one has none."
        )
    if (kernel or quantize) and not (fused and source.device == "cpu"):
        raise ModelNotAvailableError(
            f"Model options kernel / quantize need the fused encoder on the CPU (a plain BERT or ViT, "
            f"fused_encoder not off, device cpu); {source.model_id} on {source.device} is not served so."
        )
    return LinearOptions(kernel, quantize, precision)
