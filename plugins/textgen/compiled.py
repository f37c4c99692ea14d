"""One torch.compile'd decode step of the native model: static cache shapes, a tensor write slot, small ops fused."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from taskhub.errors import ParamError
from taskhub.native import native_ops_available

from .kv_cache import AttendFn, KVCache
from .model import Transformer

log = logging.getLogger("taskhub.textgen")

CACHE_BUCKET = 256  # a compiled backend rounds its cache length up to a multiple of this: one graph per bucket
MAX_GRAPHS = 1024  # compiled decode graphs one process may hold (all models, batch sizes and buckets)
COMPILE_MODES = ("default", "max-autotune")  # values of the `compile` load option besides "none"


class SlotCache:
    """The Cache protocol for one new token per row, written at slot `slot` [1] of a KVCache's buffers.

    The write position is a tensor and attention always runs over all max_len slots under a
    full-length mask (unwritten slots are masked), so every step has the same shapes and one
    compiled graph serves the whole generation.
    """

    def __init__(
        self, k_layers: list[torch.Tensor], v_layers: list[torch.Tensor], key_valid: torch.Tensor, slot: torch.Tensor
    ) -> None:
        self.k_layers, self.v_layers, self.key_valid, self.slot = k_layers, v_layers, key_valid, slot

    def prepare(self, valid: torch.Tensor, windows: set[int | None]) -> dict[int | None, Any]:
        """Mark the slot's validity (valid [B, 1]); boolean masks [B, 1, 1, max_len] per window."""
        self.key_valid.index_copy_(1, self.slot, valid)
        mask = self.key_valid[:, None, None, :]  # [B, 1, 1, S]
        keys = torch.arange(self.key_valid.shape[1], device=mask.device)  # [S]
        return {w: mask if w is None else mask & (keys > self.slot - w) for w in windows}

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, attend_fn: AttendFn
    ) -> torch.Tensor:
        k_all, v_all = self.k_layers[layer], self.v_layers[layer]  # [B, kv_heads, S, hd]
        k_all.index_copy_(2, self.slot, k)
        v_all.index_copy_(2, self.slot, v)
        return attend_fn(q, k_all, v_all, mask)


def padded_cache_length(length: int) -> int:
    """The cache length a compiled backend allocates for `length` tokens (a multiple of CACHE_BUCKET)."""
    return -(-length // CACHE_BUCKET) * CACHE_BUCKET


def can_compile(model: Transformer) -> bool:
    """Whether the decode step compiles to one graph (RoPE variants that pick a table from positions do not)."""
    rope = model.cfg.rope
    return model.tok_embeddings.weight.is_cpu and (rope is None or rope.rope_type not in ("dynamic", "longrope"))


class CompiledDecodeStep:
    """model(ids [B, 1]) at the next slot of a KVCache, through inductor; [B, V] fp32 logits.

    `mode="default"` fuses the small ops (norms, RoPE, residual adds, SiLU x mul, cache writes)
    and freezes the weights (constants inductor may pre-pack for oneDNN/AMX); "max-autotune"
    also times inductor's C++ GEMM templates against aten for every linear layer (slow to compile).
    The graph's wrapper is C++ (`cpp_wrapper`): the Python wrapper cost ~3 ms per token on SmolLM2's 30
    layers (about 150 kernel calls and their size checks); it makes the first compile ~4x longer.
    A new batch size or cache bucket compiles a new graph; inductor keeps compiled code on disk,
    so a later process compiles faster.
    """

    def __init__(self, model: Transformer, mode: str = "default") -> None:
        self.model, self.mode = model, mode
        options = {"freezing": True, "max_autotune": mode == "max-autotune", "cpp_wrapper": True}
        self._step = torch.compile(self._forward, fullgraph=True, dynamic=False, options=options)
        self._compiled: set[tuple[int, int]] = set()  # (batch, cache length) already compiled

    def _forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        slot: torch.Tensor,
        k_layers: list[torch.Tensor],
        v_layers: list[torch.Tensor],
        key_valid: torch.Tensor,
    ) -> torch.Tensor:
        cache = SlotCache(k_layers, v_layers, key_valid, slot)
        return self.model(ids, positions, valid, cache)[:, -1].float()

    def __call__(self, cache: KVCache, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Write ids [B, 1] at positions [B, 1] into the cache's next slot; logits [B, V]."""
        if cache.length + 1 > cache.max_len:
            raise ValueError(f"KV cache full: {cache.length} + 1 tokens > max_len {cache.max_len}")
        slot = torch.tensor([cache.length], device=ids.device)
        key = (ids.shape[0], cache.max_len)
        args = (ids, positions, valid, slot, cache.k_layers, cache.v_layers, cache.key_valid)
        if key in self._compiled:
            logits = self._step(*args)
        else:
            log.warning(
                "taskhub: compiling the decode step (batch %d, cache %d, mode %s); minutes on a first run, "
                "seconds when inductor's disk cache has it",
                *key,
                self.mode,
            )
            started = time.perf_counter()
            native_ops_available()  # built now, eagerly: tracing cannot build it
            # every model, batch size and bucket is one more graph of the same code object: lift
            # dynamo's per-code recompile limit (8) that would otherwise fail a process's ninth graph
            with torch._dynamo.config.patch(recompile_limit=MAX_GRAPHS):
                logits = self._step(*args)
            self._compiled.add(key)
            log.warning("taskhub: decode step compiled in %.1f s", time.perf_counter() - started)
        cache.start, cache.length = cache.length, cache.length + 1
        return logits


def compile_decode_step(model: Transformer, mode: str | None) -> CompiledDecodeStep | None:
    """The model's compiled decode step for `mode` (None / "none": eager); None where it cannot compile.

    Dynamic-NTK and LongRoPE models pick their frequency table from the positions, which
    would break the graph, so they decode eagerly (with a log line saying so).
    """
    if mode in (None, "none"):
        return None
    if mode not in COMPILE_MODES:
        raise ParamError(f"Unknown compile option {mode!r}; expected none, {', '.join(COMPILE_MODES)}.")
    if not can_compile(model):
        log.warning("taskhub: this model's decode step cannot be compiled (CPU only; not dynamic/long RoPE); eager")
        return None
    return CompiledDecodeStep(model, mode)
