"""taskhub's own CPU ops (C++, AVX-512), built from `csrc/*.cpp` into one library at first use.

- `skinny_linear` (`csrc/skinny_linear.cpp`): linear layers at decode shapes (1-32 rows), which are bound by
  reading their weights; torch's bf16 GEMV, its int8 weight-only kernel and its small-row fp32 GEMM (which
  re-packs every weight per call) reach a fraction of the read bandwidth (docs/performance.md, "Round 5").
- `paged_decode_attention` (`csrc/paged_attention.cpp`): the engine's decode attention read in place from
  its paged KV blocks, without the gather copy SDPA's layout needs (docs/performance.md, "Round 6").
- `packed_attention` (`csrc/packed_attention.cpp`): the encoders' bidirectional attention over packed
  sequences, read in place from the fused query/key/value output, without SDPA's padded grid
  (docs/performance.md, "Round 7").
- `amx_linear_bf16x3` (`csrc/amx_linear.cpp`): the encoders' fp32 linears on AMX tiles, each product as
  three bf16 ones (torch's float32 matmul precision "high"); CPUs with AMX only (docs/performance.md,
  "Round 7"). `amx_gelu_mlp_bf16x3`: a feed-forward block's two linears in one call ("Round 8").

No library in this stack has such kernels for x86 CPUs, so these are ours: compiled once per machine by
torch's extension builder (ninja + the system C++ compiler, ~30 s, cached in torch's extensions folder) and
registered as `torch.ops.taskhub.*`. Where they cannot be built (no AVX-512, no compiler) or
`TASKHUB_NATIVE_KERNELS=0`, `native_ops_available()` is False and callers keep torch's kernels. Importing
this module imports torch; `import taskhub` does not import it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path

import torch

from .cpu_info import cpu_info

__all__ = [
    "SKINNY_FP32_MAX_ROWS",
    "SKINNY_INT8_MAX_ROWS",
    "SKINNY_MAX_ROWS",
    "amx_bf16x3_available",
    "amx_gelu_mlp_bf16x3",
    "amx_linear_bf16x3",
    "amx_pack_bf16x3",
    "paged_decode_attention",
    "skinny_linear",
    "native_ops_available",
    "packed_attention",
    "packed_attention_bf16x3_fits",
    "packed_attention_fits",
]

log = logging.getLogger("taskhub")
SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cpp"))  # one library: every op of taskhub's own
HEADERS = sorted((Path(__file__).parent / "csrc").glob("*.h"))
SKINNY_MAX_ROWS = 8  # bf16 weights: at 16 rows torch's bf16 GEMM wins (AMX)
SKINNY_FP32_MAX_ROWS = 32  # fp32 weights: 1.4x MKL's sgemm at 16 rows, 1.1x at 32, slower at 64
SKINNY_INT8_MAX_ROWS = 32  # int8 weights: still 1.6x torch's int8 weight-pack kernel at 32 rows
_FLAGS = ["-O3", "-march=native", "-fopenmp"]  # OpenMP: at::parallel_for shares torch's thread pool (same libgomp)
_state: dict[str, bool] = {}
_build_lock = threading.Lock()


def _build() -> bool:
    """Compile and load the ops; False (with the reason logged once) where this machine cannot."""
    if os.environ.get("TASKHUB_NATIVE_KERNELS", "1") == "0":
        return False
    info = cpu_info()
    if not info.avx512:
        log.info("taskhub's native CPU ops need AVX-512 (%s); using torch's kernels", info.model)
        return False
    # -march=native code must not be reused on another kind of CPU: the CPU's flags are part of the name
    digest = hashlib.sha256(
        b"".join(p.read_bytes() for p in [*SOURCES, *HEADERS]) + " ".join([*_FLAGS, info.flags]).encode()
    ).hexdigest()[:12]
    path = os.environ.get("PATH")
    try:
        from torch.utils import cpp_extension

        if shutil.which("ninja") is None:  # a venv used without activating it has ninja in its bin folder only
            import ninja

            os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path or ""])
        log.info("Building taskhub's native CPU ops (once per machine, ~30 s)")
        cpp_extension.load(
            name=f"taskhub_native_{digest}",
            sources=[str(p) for p in SOURCES],
            extra_cflags=_FLAGS,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as exc:  # no compiler, no ninja, a failed build: torch's kernels still work
        log.warning("taskhub's native CPU ops could not be built (%s); using torch's kernels", exc)
        return False
    finally:
        if path is not None:
            os.environ["PATH"] = path
    return True


def native_ops_available() -> bool:
    """Whether taskhub's native ops run here (builds them on the first call)."""
    if "built" not in _state:
        with _build_lock:  # threads of a shared pipeline may all decode their first token at once
            if "built" not in _state:
                built = _build()
                if built:
                    _register_fake()
                _state["built"] = built
    return _state["built"]


def skinny_linear(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x [..., in] (fp32 / bf16) @ (weight [out, in] (fp32 / bf16 / int8) * scales [out]).T + bias, in x's dtype.

    Fastest at up to 8 rows; more rows run in passes of 8 (fp32 weights: in tiles of 4 rows reusing each weight
    from cache). Call `native_ops_available()` first."""
    return torch.ops.taskhub.skinny_linear(x, weight, scales, bias)


def paged_decode_attention(
    q: torch.Tensor,
    k_store: torch.Tensor,
    v_store: torch.Tensor,
    table: torch.Tensor,
    first_key: torch.Tensor,
    keys: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query per sequence q [S, heads, hd] over keys/values read in place from paged stores
    [blocks, block_size, kv_heads, hd]: sequence s sees keys first_key[s] .. keys[s] - 1 of its blocks
    table[s] laid end to end. Grouped-query heads share their kv head's reads. fp32 or bf16 (one dtype for
    all three), hd a multiple of 16 up to 256, up to 8 query heads per kv head. -> [S, heads, hd]."""
    return torch.ops.taskhub.paged_decode_attention(q, k_store, v_store, table, first_key, keys, scale)


def packed_attention(
    qkv: torch.Tensor, starts: torch.Tensor, heads: int, scale: float, bf16x3: bool = False
) -> torch.Tensor:
    """Bidirectional attention of packed sequences: qkv [N, 3 * heads * hd] fp32 (queries, keys, values side
    by side), sequence s in rows starts[s] .. starts[s + 1] - 1 (int64, from 0 to N) -> [N, heads * hd].
    hd a multiple of 16 up to 128. `bf16x3`: both matmuls on AMX tiles as three bf16 products (fp32 matmul
    precision "high"; see `packed_attention_bf16x3_fits`). Call `native_ops_available()` first."""
    return torch.ops.taskhub.packed_attention(qkv, starts, heads, scale, bf16x3)


def packed_attention_fits(dtype: torch.dtype, head_dim: int) -> bool:
    """Whether `packed_attention` serves this encoder here: fp32, head_dim a multiple of 16 up to 128."""
    return dtype == torch.float32 and head_dim % 16 == 0 and head_dim <= 128 and native_ops_available()


def packed_attention_bf16x3_fits(dtype: torch.dtype, head_dim: int) -> bool:
    """Whether `packed_attention(..., bf16x3=True)` runs here: fp32, head_dim a multiple of 32 up to 128, AMX."""
    return packed_attention_fits(dtype, head_dim) and head_dim % 32 == 0 and amx_bf16x3_available()


def amx_bf16x3_available() -> bool:
    """Whether `amx_linear_bf16x3` runs here: native ops built on a CPU with AMX and AVX-512 BF16."""
    info = cpu_info()
    return info.amx and info.avx512_bf16 and native_ops_available()


def amx_pack_bf16x3(weight: torch.Tensor) -> torch.Tensor:
    """fp32 weight [out, in] (both multiples of 32) -> its hi and lo bf16 parts packed as AMX tiles, once per
    layer, for `amx_linear_bf16x3`."""
    return torch.ops.taskhub.amx_pack_bf16x3(weight)


def amx_linear_bf16x3(
    x: torch.Tensor,
    packed: torch.Tensor,
    bias: torch.Tensor | None = None,
    gelu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 gelu?(x [..., in] @ W.T + bias) (+ residual [..., out]) with W packed by `amx_pack_bf16x3`; each
    product is hi*hi + hi*lo + lo*hi of bf16 parts, summed in fp32 (relative error ~4e-6). Call
    `amx_bf16x3_available()` first."""
    return torch.ops.taskhub.amx_linear_bf16x3(x, packed, bias, gelu, residual)


def amx_gelu_mlp_bf16x3(
    x: torch.Tensor,
    up: torch.Tensor,
    up_bias: torch.Tensor | None,
    down: torch.Tensor,
    down_bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """A feed-forward block, down(GELU(up(x))) (+ residual), both linears packed by `amx_pack_bf16x3`: what two
    `amx_linear_bf16x3` calls compute, but each thread carries its rows through both, the GELU output going
    straight into the second linear's bf16 parts in cache. Call `amx_bf16x3_available()` first."""
    return torch.ops.taskhub.amx_gelu_mlp_bf16x3(x, up, up_bias, down, down_bias, residual)


def _register_fake() -> None:
    """skinny_linear's output shape for torch.compile: the op is opaque to inductor and called as is."""

    @torch.library.register_fake("taskhub::skinny_linear")
    def _(
        x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return x.new_empty((*x.shape[:-1], weight.shape[0]))
