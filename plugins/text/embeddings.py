"""feature-extraction stages: encoder forward, then pooling and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from taskhub import StageContext

from .tokenize import Encoded, pad_batch


@dataclass
class TokenStates:
    """Last hidden states of one input, real tokens only: [T, H]."""

    hidden: torch.Tensor


def encode(items: list[Encoded], params: BaseModel, ctx: StageContext) -> list[TokenStates]:
    """One forward pass over a padded batch; each item keeps only its own tokens."""
    tokenizer = ctx.model.tokenizer
    batch = pad_batch(items, tokenizer.pad_token_id or 0, ctx.device)
    hidden = ctx.model.model(**batch).last_hidden_state  # [B, T, H]
    return [TokenStates(hidden[row, : len(item)]) for row, item in enumerate(items)]


class PoolParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pooling: Literal["mean", "cls", "none"] = "mean"
    normalize: bool = True


def pool(items: list[TokenStates], params: PoolParams, ctx: StageContext) -> list[Any]:
    """Mean or CLS pooling to one vector (or token vectors with "none"), L2-normalised if asked."""
    results = []
    for item in items:
        hidden = item.hidden.float()
        if params.pooling == "mean":
            vectors = hidden.mean(dim=0)
        elif params.pooling == "cls":
            vectors = hidden[0]
        else:
            vectors = hidden
        if params.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
        results.append(vectors.tolist())
    return results
