"""Decode-shape matmul kernels on CPU: every fp32 / bf16 / int8 / int4 candidate on SmolLM2-135M's 121 linear weights.

Each candidate gets its own copy of all weights (540 MB in fp32, more than the L3 cache), the
candidates run interleaved layer by layer, and each call's time is the minimum over --sweeps
sweeps; a candidate's step time is the sum over layers. Printed: ms per step, GB/s of weight
bytes, and that as a fraction of the read bandwidth (best sum of a 256 MiB tensor).

    python benchmarks/linear_kernels.py [--rows 1] [--sweeps 5] [--only "bf16 onednn" ...] [--alone]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from taskhub.native import native_ops_available, skinny_linear

LAYER = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # (out, in) of qkv, o, gate+up, down
SHAPES = LAYER * 30 + [(49152, 576)]  # 30 layers and the output head
BYTES_PER_WEIGHT = {"fp32": 4, "bf16": 2, "int8": 1, "int4": 0.5 + 4 / 32}
ONEDNN = torch.ops.mkldnn._linear_pointwise.default


def int4_packed(w: torch.Tensor, group: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    out_features, in_features = w.shape
    grouped = w.view(out_features, in_features // group, group)
    low, high = grouped.amin(-1), grouped.amax(-1)
    scale = ((high - low) / 15).clamp(min=1e-6)
    codes = torch.round((grouped - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.view(out_features, in_features), 1)
    return packed, torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous().bfloat16()


def int8_weights(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes per output row and their bf16 scales (the decoder's `quantize: int8` layout)."""
    scale = w.abs().amax(1) / 127
    return torch.round(w / scale[:, None]).to(torch.int8), scale.bfloat16()


def candidate(name: str, w: torch.Tensor, rows: int) -> Callable[[], torch.Tensor]:
    """A no-argument call of kernel `name` on (its own copy of) weight w [out, in]."""
    x = torch.randn(rows, w.shape[1])
    xb = x.bfloat16()
    if name == "fp32 aten":
        return lambda: F.linear(x, w)
    if name == "fp32 onednn":
        return lambda: ONEDNN(x, w, None, "none", [], "")
    if name == "fp32 mkl packed":
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
        return lambda: torch.ops.mkl._mkl_linear(x, packed, w, None, rows)
    if name == "bf16 aten":
        wb = w.bfloat16()
        return lambda: F.linear(xb, wb)
    if name == "bf16 onednn":
        wb = w.bfloat16()
        return lambda: ONEDNN(xb, wb, None, "none", [], "")
    if name == "bf16 onednn packed":
        packed = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), rows)
        return lambda: ONEDNN(xb, packed, None, "none", [], "")
    if name == "int8 int8pack_mm":
        codes, scales = int8_weights(w)
        return lambda: torch.ops.aten._weight_int8pack_mm(xb, codes, scales)
    if name.endswith(" skinny"):  # taskhub's own kernel (taskhub.native), same weights in each format
        if name == "int8 skinny":
            codes, scales = int8_weights(w)
            return lambda: skinny_linear(xb, codes, scales, None)
        wd, xd = (w, x) if name == "fp32 skinny" else (w.bfloat16(), xb)
        return lambda: skinny_linear(xd, wd, None, None)
    if name == "int4 int4pack_mm":
        packed, scales_and_zeros = int4_packed(w)
        return lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed, 32, scales_and_zeros)
    raise ValueError(name)


NAMES = [
    "fp32 aten",
    "fp32 onednn",
    "fp32 mkl packed",
    "bf16 aten",
    "bf16 onednn",
    "bf16 onednn packed",
    "int8 int8pack_mm",
    "int4 int4pack_mm",
    "fp32 skinny",
    "bf16 skinny",
    "int8 skinny",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1, help="M: tokens per matmul (1 = batch-1 decoding)")
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=NAMES, default=NAMES)
    parser.add_argument(
        "--alone",
        action="store_true",
        help="time each candidate's sweeps back to back (its own weights stream, as in a decode step) "
        "instead of interleaving the candidates layer by layer",
    )
    args = parser.parse_args()
    if not native_ops_available():
        names = [name for name in args.only if not name.endswith(" skinny")]
        print(f"(taskhub's skinny kernel does not run here: skipping {', '.join(set(args.only) - set(names))})")
        args.only = names
    torch.manual_seed(0)
    calls: dict[str, list[Callable[[], torch.Tensor]]] = {n: [] for n in args.only}
    for out_features, in_features in SHAPES:
        w = torch.randn(out_features, in_features) * 0.02
        for name in args.only:
            calls[name].append(candidate(name, w, args.rows))
    probe = torch.randn(256 * 2**20 // 4)
    best = {n: [float("inf")] * len(SHAPES) for n in args.only}
    bandwidth = 0.0
    groups = [[name] for name in args.only] if args.alone else [args.only]
    for group in groups:
        for _ in range(args.sweeps):
            start = time.perf_counter()
            probe.sum()
            bandwidth = max(bandwidth, probe.nbytes / (time.perf_counter() - start))
            for layer in range(len(SHAPES)):
                for name in group:
                    start = time.perf_counter()
                    calls[name][layer]()
                    best[name][layer] = min(best[name][layer], time.perf_counter() - start)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    order = "each alone" if args.alone else "interleaved"
    print(
        f"rows {args.rows}, {args.sweeps} sweeps ({order}), read bandwidth {bandwidth / 1e9:.1f} GB/s, load average {load}"
    )
    params = sum(o * i for o, i in SHAPES)
    for name in args.only:
        seconds = sum(best[name])
        rate = params * BYTES_PER_WEIGHT[name[:4]] / seconds
        print(
            f"  {name:20s} {seconds * 1e3:8.2f} ms/step {rate / 1e9:6.1f} GB/s {100 * rate / bandwidth:5.0f}% of read bw"
        )


if __name__ == "__main__":
    main()
