"""What the encoder benchmarks print about the machine: CPU, extensions, versions, load, and a roofline.

The roofline is the machine's own GEMM rate: plain `torch.mm` at the encoder's linear shapes, with as
many rows as a batch has tokens. An encoder forward is nearly all such GEMMs, so its FLOPs (counted from
the model's shapes and the real, unpadded token counts) over its time, divided by that rate, says how
close to the compute limit it runs; padding, attention, LayerNorm and glue are the gap.
"""

from __future__ import annotations

import os
import re
import time

import torch

from taskhub.cpu_kernels import cpu_info


def machine_lines() -> list[str]:
    """CPU model and extensions, torch / oneDNN versions, threads and the load average now."""
    onednn = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"CPU: {cpu_info().line()}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        f"torch {torch.__version__}, oneDNN {onednn.group(1) if onednn else 'absent'}; load average {load}",
    ]


def linear_shapes(hidden: int, intermediate: int) -> list[tuple[int, int]]:
    """(in, out) of one transformer layer's matmuls: fused query/key/value, attention output, MLP in and out."""
    return [(hidden, 3 * hidden), (hidden, hidden), (hidden, intermediate), (intermediate, hidden)]


def encoder_flops(hidden: int, intermediate: int, layers: int, lengths: list[int]) -> float:
    """Multiply-adds x 2 of the encoder layers over sequences of these (real) token counts: the linears
    plus attention's two T x T products; embeddings, norms and softmax are left out (small)."""
    per_token = 2 * sum(i * o for i, o in linear_shapes(hidden, intermediate))
    return float(layers * sum(per_token * n + 4 * n * n * hidden for n in lengths))


def gemm_flops_per_s(shapes: list[tuple[int, int]], rows: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Measured torch.mm rate over one pass of these shapes at `rows` rows (best of `repeats`)."""
    gen = torch.Generator().manual_seed(0)
    pairs = [
        (torch.randn(rows, i, generator=gen).to(dtype), torch.randn(i, o, generator=gen).to(dtype)) for i, o in shapes
    ]
    flops = sum(2 * rows * i * o for i, o in shapes)
    best = float("inf")
    with torch.inference_mode():
        for a, b in pairs:
            torch.mm(a, b)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            for a, b in pairs:
                torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    return flops / best


def roofline_lines(name: str, flops: float, seconds: float, peaks: dict[str, float]) -> list[str]:
    """The encoder's achieved rate and its fraction of each measured GEMM peak."""
    rate = flops / seconds
    parts = [f"{rate / 1e9:.1f} GFLOP/s"]
    parts += [f"{rate / peak:.0%} of {dtype} torch.mm ({peak / 1e9:.1f} GFLOP/s)" for dtype, peak in peaks.items()]
    return [f"roofline {name}: " + "; ".join(parts)]
