"""CPU matmul kernel choice for the native decoder's linear layers: the fastest of MKL (aten) and oneDNN, measured.

Which library reads a weight matrix faster at decode shapes depends on the CPU: oneDNN's
kernel was ~2.5x faster than MKL's sgemv on an AMD EPYC, and several times slower than it
for plain (not pre-packed) bf16 weights on an Intel Xeon with AMX. So the first linear of
each (dtype, row-count class) in a process times both on probe matrices bigger than the
L2 cache and keeps the faster one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

LinearFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
SMALL_M = 16  # rows up to this many (decode steps, small batches) are timed apart from prefill-sized inputs


def _onednn_op() -> object | None:
    if not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return None if op is None else op.default


_ONEDNN = _onednn_op()


def aten_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, w, b)


def onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return _ONEDNN(x, w, b, "none", [], "")  # type: ignore[operator]


def _time(fn: LinearFn, x: torch.Tensor, weights: list[torch.Tensor], sweeps: int = 3) -> float:
    """Best time of one sweep of fn over all probe weights (each weight once per sweep, so no cache reuse)."""
    best = float("inf")
    for _ in range(sweeps):
        start = time.perf_counter()
        for w in weights:
            fn(x, w, None)
        best = min(best, time.perf_counter() - start)
    return best


_CHOSEN: dict[tuple[torch.dtype, bool], LinearFn] = {}


def _choose(dtype: torch.dtype, small: bool) -> LinearFn:
    """Time aten and oneDNN on 4 distinct 2048 x 2048 weights (16 MiB in fp32) with 1 or 64 rows."""
    if _ONEDNN is None:
        return aten_linear
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(2048, 2048, generator=gen).to(dtype) for _ in range(4)]
    x = torch.randn(1 if small else 64, 2048, generator=gen).to(dtype)
    with torch.inference_mode():
        for fn in (aten_linear, onednn_linear):  # warm-up: library init, kernel selection
            fn(x, weights[0], None)
        timings = {fn: _time(fn, x, weights) for fn in (aten_linear, onednn_linear)}
    return min(timings, key=timings.__getitem__)


def cpu_linear(dtype: torch.dtype, rows: int) -> LinearFn:
    """The faster linear kernel for fp32/bf16 CPU inputs with `rows` rows, chosen once per process."""
    key = (dtype, rows <= SMALL_M)
    if key not in _CHOSEN:
        _CHOSEN[key] = _choose(*key)
    return _CHOSEN[key]
