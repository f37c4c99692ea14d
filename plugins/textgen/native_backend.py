"""LogitsBackend over the native Transformer: prefill, one-token decode, beam reordering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from taskhub.errors import TaskhubError

from .backend import PromptBatch
from .checkpoint import load_transformer, transformer_config
from .compiled import CompiledDecodeStep, compile_decode_step, padded_cache_length
from .kv_cache import KVCache
from .model import Transformer


def is_supported(config_dict: dict[str, Any]) -> bool:
    """Whether the native decoder covers this Hugging Face config (else use the transformers backend)."""
    try:
        transformer_config(config_dict)
    except TaskhubError:
        return False
    return True


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of every token [B, T]: count of real tokens before it; padding gets 0 (as transformers)."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


class NativeBackend:
    """Next-token logits from the native model; owns one KV cache per generation.

    The model runs under torch.inference_mode (the cheapest dispatch); the logits handed
    back are cloned out of it so decoding code may modify them in place. With a compiled
    `step` of this model (compiled.py; made once per loaded model, shared by its backends)
    decode steps run one inductor graph; the prompt still runs eagerly.
    """

    def __init__(self, model: Transformer, step: CompiledDecodeStep | None = None) -> None:
        self.model = model
        self.step = step
        self.vocab_size = model.cfg.vocab_size
        self.device = model.tok_embeddings.weight.device
        self.cache: KVCache | None = None
        self.next_positions = torch.zeros(0, dtype=torch.long)  # [B] position of the next token of each row
        self.valid = torch.ones(0, 1, dtype=torch.bool)  # [B, 1] decoded tokens are never padding
        rope = model.cfg.rope
        # LongRoPE (Phi-3): when the sequence first outgrows the original context, transformers
        # recomputes the whole cache with the long factors; so does this backend, from its token history
        self.recompute_at = (
            rope.scaling["original_max_position_embeddings"] if rope and rope.rope_type == "longrope" else None
        )
        self.history = torch.zeros(0, 0, dtype=torch.long)  # [B, S] tokens so far (kept only for the recompute)
        self.history_mask = torch.zeros(0, 0, dtype=torch.long)  # [B, S] 0 = padding

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu", compile_mode: str | None = None
    ) -> NativeBackend:
        """A backend over the checkpoint at `path`; `compile_mode` as compiled.compile_decode_step."""
        model = load_transformer(path, dtype=dtype, device=device)
        return cls(model, compile_decode_step(model, compile_mode))

    def prefill(self, batch: PromptBatch, max_new_tokens: int) -> torch.Tensor:
        """Run the left-padded prompts into a fresh cache sized for `max_new_tokens` more; [B, V] fp32."""
        with torch.inference_mode():
            ids = batch.input_ids.to(self.device)
            mask = batch.attention_mask.to(self.device)
            B, T = ids.shape
            length = T + max_new_tokens
            self.cache = self.model.new_cache(B, length if self.step is None else padded_cache_length(length))
            positions = positions_from_mask(mask)
            self.next_positions = positions[:, -1] + 1
            self.valid = torch.ones(B, 1, dtype=torch.bool, device=self.device)
            logits = self.model(ids, positions, mask.bool(), self.cache)[:, -1].float()
            if self.recompute_at is not None:
                self.history, self.history_mask = ids, mask
        return logits.clone()  # a normal tensor: callers may edit it in place

    def _recompute(self, ids: torch.Tensor) -> torch.Tensor:
        """Run the whole history plus ids [B, 1] into a fresh cache of the same size; [B, V] logits."""
        assert self.cache is not None
        ids = torch.cat([self.history, ids], dim=1)
        mask = torch.cat([self.history_mask, torch.ones_like(self.valid, dtype=torch.long)], dim=1)
        self.cache = self.model.new_cache(ids.shape[0], self.cache.max_len)
        return self.model(ids, positions_from_mask(mask), mask.bool(), self.cache)[:, -1]

    def decode(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Append next_ids [B] to every row; [B, V] fp32 logits of the token after them."""
        if self.cache is None:
            raise RuntimeError("decode() before prefill()")
        with torch.inference_mode():
            ids = next_ids.to(self.device).view(-1, 1)  # [B, 1]
            if self.recompute_at is not None and self.cache.length == self.recompute_at:
                logits = self._recompute(ids).float()
            elif self.step is not None:
                logits = self.step(self.cache, ids, self.next_positions[:, None], self.valid)
            else:
                logits = self.model(ids, self.next_positions[:, None], self.valid, self.cache)[:, -1].float()
            if self.recompute_at is not None:
                self.history = torch.cat([self.history, ids], dim=1)
                self.history_mask = torch.cat([self.history_mask, torch.ones_like(ids)], dim=1)
            self.next_positions = self.next_positions + 1
        return logits.clone()

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Keep cache rows `beam_idx` [B] in that order (beam search)."""
        if self.cache is None:
            raise RuntimeError("reorder_cache() before prefill()")
        beam_idx = beam_idx.to(self.device)
        with torch.inference_mode():
            self.cache.reorder(beam_idx)
            self.next_positions = self.next_positions[beam_idx]
            if self.recompute_at is not None:
                self.history, self.history_mask = self.history[beam_idx], self.history_mask[beam_idx]
