"""The contract between decoding (generate.py) and whatever produces next-token logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class PromptBatch:
    """A batch of prompts ready for a backend.

    Decoder-only models: `input_ids` are the left-padded prompts; `encoder_inputs`, if any,
    are extra forward inputs (a VLM's pixel_values, image_sizes, ...).
    Encoder-decoder models: `input_ids` are the decoder start ids and `encoder_inputs`
    holds what the encoder takes (input_ids/attention_mask, pixel_values, input_features).
    """

    input_ids: torch.Tensor  # [B, T] int64, left-padded
    attention_mask: torch.Tensor  # [B, T] int64, 1 = real token, 0 = padding
    encoder_inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def left_padded(
        cls,
        prompts: list[list[int]],
        pad_id: int,
        device: torch.device,
        encoder_inputs: dict[str, torch.Tensor] | None = None,
    ) -> PromptBatch:
        """Decoder prompts (token ids), left-padded with `pad_id` into one batch on `device`."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        return cls(ids.to(device), mask.to(device), dict(encoder_inputs or {}))

    def repeat_interleave(self, n: int) -> PromptBatch:
        """Each row n times in a row (beam search, num_return_sequences)."""
        if n == 1:
            return self
        return PromptBatch(
            self.input_ids.repeat_interleave(n, dim=0),
            self.attention_mask.repeat_interleave(n, dim=0),
            {k: v.repeat_interleave(n, dim=0) for k, v in self.encoder_inputs.items()},
        )


class LogitsBackend(Protocol):
    """One model behind the decoding loop: the native decoder or any transformers model."""

    vocab_size: int

    def prefill(self, batch: PromptBatch, max_new_tokens: int) -> torch.Tensor:
        """Run the prompt, allocate the cache for `max_new_tokens` more; [B, V] fp32 next-token logits."""
        ...

    def decode(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Append `next_ids` [B] to every row; [B, V] fp32 logits of the token after them."""
        ...

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Keep cache rows `beam_idx` [B] in that order (beam search)."""
        ...
