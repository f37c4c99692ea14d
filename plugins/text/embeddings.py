"""feature-extraction stages: encoder forward, then pooling and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel

from taskhub import StageContext

from .forward import pad_batch
from .params import Pooling, PoolParams
from .tokenize import Encoded


@dataclass
class TokenStates:
    """Last hidden states of one input, real tokens only: [T, H]."""

    hidden: torch.Tensor


def hidden_states(items: list[Encoded], ctx: StageContext) -> torch.Tensor:
    """Last hidden states of a right-padded batch, [B, T, H]; the fused encoder when the model has one."""
    batch = pad_batch(items, ctx.model.pad_id, ctx.device)
    if ctx.model.encoder is not None:
        return ctx.model.encoder(**batch)
    return ctx.model.model(**batch).last_hidden_state


def encode(items: list[Encoded], params: BaseModel, ctx: StageContext) -> list[TokenStates]:
    """One forward pass over a padded batch; each item keeps only its own tokens."""
    hidden = hidden_states(items, ctx)
    return [TokenStates(hidden[row, : len(item)]) for row, item in enumerate(items)]


def pool_one(hidden: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[T, H] -> [H] (mean over the real tokens, or the first token), or [T, H] unchanged for "none"."""
    hidden = hidden.float()
    if pooling == "mean":
        return hidden.mean(dim=0)
    if pooling == "cls":
        return hidden[0]
    return hidden


def pool(items: list[TokenStates], params: PoolParams, ctx: StageContext) -> list[Any]:
    """Mean or CLS pooling to one vector (or token vectors with "none"), L2-normalised if asked."""
    normalize = params.pooling != "none" if params.normalize is None else params.normalize
    vectors = [pool_one(item.hidden, params.pooling) for item in items]
    if params.pooling != "none":  # one [B, H] tensor: normalise and convert the batch at once
        pooled = torch.stack(vectors)
        return (torch.nn.functional.normalize(pooled, p=2, dim=-1) if normalize else pooled).tolist()
    return [(torch.nn.functional.normalize(v, p=2, dim=-1) if normalize else v).tolist() for v in vectors]


def embed(rows: list[Encoded], ctx: StageContext, pooling: Pooling, chunk_size: int = 32) -> torch.Tensor:
    """Pooled vectors of many texts, [N, H] in input order; forward passes over chunks of similar length."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    vectors: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    for start in range(0, len(order), chunk_size):
        chunk = order[start : start + chunk_size]
        hidden = hidden_states([rows[i] for i in chunk], ctx)
        for row, i in enumerate(chunk):
            vectors[i] = pool_one(hidden[row, : len(rows[i])], pooling)
    return torch.stack(vectors)
