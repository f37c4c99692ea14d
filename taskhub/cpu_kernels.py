"""CPU matmul kernels the plugins share: linear layers run on the kernel measured fastest on this CPU.

Public API for plugins (docs/plugins.md). Which library multiplies fastest depends on the CPU and the
shape: oneDNN with its bias / GELU / residual epilogue fused and its weights pre-packed won at encoder
shapes on an Intel Xeon with AMX, plain oneDNN beat MKL's sgemv ~2.5x at decode shapes on an AMD EPYC
but lost to it for bf16 on the Xeon. So nothing here is chosen by CPU name: the first layer of each
kind in a process times the candidates on its own shape and keeps the fastest.

Importing this module imports torch; `import taskhub` does not import this module.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelNotAvailableError
from .models import ModelSource

__all__ = [
    "KERNELS",
    "QUANTIZE",
    "CpuInfo",
    "Linear",
    "LinearFn",
    "aten_linear",
    "cpu_info",
    "cpu_linear",
    "fused_linear_available",
    "linear_options",
    "onednn_linear",
]

LinearFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
SMALL_M = 16  # cpu_linear: rows up to this many (decode steps, small batches) are timed apart from prefill
PROBE_ROWS = 512  # Linear: rows of the random input its kernels are timed on (a batch of ~8-16 sentences)
KERNELS = ("aten", "onednn", "onednn-packed")  # Linear(kernel=...): what may be forced instead of measured
QUANTIZE = ("int8",)  # Linear(quantize=...): dynamic int8 (weights per output channel, activations per call)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model and the matrix / vector extensions the kernels can use (Linux /proc/cpuinfo)."""

    model: str
    amx: bool  # AMX tiles for bf16 / int8 (Intel Sapphire Rapids and later)
    avx512_bf16: bool  # AVX-512 BF16 dot products
    vnni: bool  # AVX-512 or AVX VNNI int8 dot products

    def line(self) -> str:
        found = [name for name, ok in (("AMX", self.amx), ("AVX512-BF16", self.avx512_bf16), ("VNNI", self.vnni)) if ok]
        return f"{self.model}; {', '.join(found) or 'no AMX / AVX512-BF16 / VNNI'}"


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """What this CPU is and offers; "unknown" with no extensions where /proc/cpuinfo is missing."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo("unknown", False, False, False)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return CpuInfo(
        model=fields.get("model name", "unknown"),
        amx="amx_tile" in flags,
        avx512_bf16="avx512_bf16" in flags,
        vnni=bool(flags & {"avx512_vnni", "avx_vnni"}),
    )


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
    """The faster plain linear kernel for fp32/bf16 CPU inputs with `rows` rows, chosen once per process."""
    key = (dtype, rows <= SMALL_M)
    if key not in _PLAIN:
        _PLAIN[key] = _choose_plain(*key)
    return _PLAIN[key]


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


class _Int8Dynamic(_Kernel):
    """Dynamic int8 on torch's x86 quantized engine (fbgemm: VNNI where the CPU has it): weights symmetric
    per output channel, activations quantized per call from their range inside the kernel, fp32 out.
    Per-token activation scales (`torch._int_mm` + scaling in eager) were more accurate but slower
    than fp32 here; see docs/performance.md, "Encoders"."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> None:
        super().__init__(weight, bias, act)
        w = weight.detach().float()
        scales = (w.abs().amax(dim=1).clamp_min(1e-8) / 127).double()
        zero_points = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensor types are deprecated; the engine's kernels are not
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(w, scales, zero_points, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x.float(), self.packed, False).to(x.dtype)
        y = F.gelu(y) if self.act == "gelu" else y
        return y if residual is None else y + residual


def _candidates(weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> dict[str, _Kernel]:
    kernels = {"aten": _Kernel(weight, bias, act)}
    if fused_linear_available(weight.device, weight.dtype):
        kernels["onednn"] = _OneDNN(weight, bias, act, packed=False)
        kernels["onednn-packed"] = _OneDNN(weight, bias, act, packed=True)
    return kernels


_FUSED: dict[tuple[torch.dtype, int, int, str], str] = {}  # (dtype, in, out, act) -> kernel that won here


def _choose_fused(kernels: dict[str, _Kernel], key: tuple[torch.dtype, int, int, str]) -> str:
    """The fastest of `kernels` for this layer shape, timed on PROBE_ROWS random rows once per process."""
    if key not in _FUSED:
        dtype, features, _, _ = key
        x = torch.randn(PROBE_ROWS, features, generator=torch.Generator().manual_seed(0)).to(dtype)

        def run(kernel: _Kernel) -> Callable[[], object]:
            return lambda: kernel(x, None)

        _FUSED[key] = _fastest({name: run(kernel) for name, kernel in kernels.items()})
    return _FUSED[key]


class Linear(nn.Module):
    """y = act(x @ W.T + b) (+ residual) with `act` "none" or "gelu" (erf GELU), on the kernel measured
    fastest here for this shape and dtype, or the one named by `kernel` ("aten", "onednn",
    "onednn-packed"). `quantize="int8"` runs dynamic int8 instead (fp32 in and out)."""

    def __init__(self, source: nn.Linear, act: str = "none", kernel: str | None = None, quantize: str | None = None):
        super().__init__()
        if act not in ("none", "gelu"):
            raise ValueError(f"Unknown activation {act!r}; expected 'none' or 'gelu'")
        if quantize not in (None, *QUANTIZE):
            raise ValueError(f"Unknown quantize {quantize!r}; expected None or one of {', '.join(QUANTIZE)}")
        self.weight = source.weight  # [out, in]
        self.bias = source.bias  # [out]
        self.act = act
        self._kernel: _Kernel
        if quantize == "int8":
            self.kernel_name, self._kernel = "int8-dynamic", _Int8Dynamic(self.weight, self.bias, act)
            return
        kernels = _candidates(self.weight, self.bias, act)
        if kernel is not None and kernel not in kernels:
            raise ValueError(f"Kernel {kernel!r} is not available here; expected one of {', '.join(kernels)}")
        key = (self.weight.dtype, source.in_features, source.out_features, act)
        self.kernel_name = kernel or (_choose_fused(kernels, key) if len(kernels) > 1 else "aten")
        self._kernel = kernels[self.kernel_name]

    @classmethod
    def stacked(
        cls, parts: list[nn.Linear], act: str = "none", kernel: str | None = None, quantize: str | None = None
    ) -> Linear:
        """One linear computing several (query, key, value) side by side: out = concat of theirs."""
        first = parts[0]
        joined = nn.Linear(first.in_features, sum(p.out_features for p in parts), device=first.weight.device)
        joined.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        joined.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
        return cls(joined, act, kernel, quantize)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self._kernel(x, residual)


def linear_options(source: ModelSource, fused: bool) -> tuple[str | None, str | None]:
    """A loader's `options.kernel` and `options.quantize`, checked: both need a model whose linears
    run on `Linear` (`fused`) on the CPU."""
    kernel, quantize = source.options.get("kernel"), source.options.get("quantize")
    if kernel not in (None, *KERNELS):
        raise ModelNotAvailableError(f"Unknown kernel option {kernel!r}; expected one of {', '.join(KERNELS)}.")
    if quantize not in (None, *QUANTIZE):
        raise ModelNotAvailableError(f"Unknown quantize option {quantize!r}; expected none, {', '.join(QUANTIZE)}.")
    if (kernel or quantize) and not (fused and source.device == "cpu"):
        raise ModelNotAvailableError(
            f"Model options kernel / quantize need the fused encoder on the CPU (a plain BERT or ViT, "
            f"fused_encoder not off, device cpu); {source.model_id} on {source.device} is not served so."
        )
    return kernel, quantize
