"""Tokenization stage shared by the text tasks: text in, token ids out, padded later per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from taskhub import StageContext
from taskhub.errors import BadInputError


class TokenizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_length: int | None = Field(None, ge=1, description="Truncate to this many tokens (default: the model's limit)")


@dataclass
class Encoded:
    """One tokenized input; len() is its token count, which the core sorts batches by."""

    input_ids: list[int]
    extra: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize(items: list[Any], params: TokenizeParams, ctx: StageContext) -> list[Encoded]:
    """Texts longer than the model's context are truncated to it (the result covers the prefix)."""
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise BadInputError(f"Input {index} is a {type(text).__name__}; expected a string.")
    tokenizer = ctx.model.tokenizer
    max_length = min(params.max_length or ctx.model.max_length, ctx.model.max_length)
    encoded = tokenizer(items, truncation=True, max_length=max_length, return_attention_mask=False)
    extras = [k for k in encoded.keys() if k not in ("input_ids",)]
    return [
        Encoded(ids, {k: encoded[k][i] for k in extras}) for i, ids in enumerate(encoded["input_ids"])
    ]


def pad_batch(items: list[Encoded], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest item: input_ids, attention_mask and any extra ids."""
    width = max(len(item) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    extras = {k: torch.zeros((len(items), width), dtype=torch.long) for k in items[0].extra}
    for row, item in enumerate(items):
        n = len(item)
        ids[row, :n] = torch.tensor(item.input_ids)
        mask[row, :n] = 1
        for key, values in item.extra.items():
            extras[key][row, :n] = torch.tensor(values)
    batch = {"input_ids": ids, "attention_mask": mask, **extras}
    return {k: v.to(device) for k, v in batch.items()}
