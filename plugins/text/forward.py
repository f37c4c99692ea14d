"""Running a text model on token rows: right-padded batches, each row's outputs cut back to its tokens."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from taskhub import StageContext

from .tokenize import Encoded

T = TypeVar("T")
ROWS_PER_FORWARD = 64  # chunk size for tasks that turn one input into many rows (NLI pairs, QA spans)


def pad_batch(items: list[Encoded], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest item: input_ids, attention_mask and any extra ids."""
    width = max(len(item) for item in items)
    gaps = [width - len(item) for item in items]
    batch = {
        "input_ids": torch.tensor([item.input_ids + [pad_id] * gap for item, gap in zip(items, gaps)]),
        "attention_mask": torch.tensor([[1] * len(item) + [0] * gap for item, gap in zip(items, gaps)]),
    }
    for key in items[0].extra:
        batch[key] = torch.tensor([item.extra[key] + [0] * gap for item, gap in zip(items, gaps)])
    return {k: v.to(device) for k, v in batch.items()}


def _no_cache(model: Any) -> dict[str, Any]:
    """`use_cache=False` for models that take it (BART): a classifier needs no decoder cache."""
    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}


def forward_rows(
    rows: list[Encoded], ctx: StageContext, pick: Callable[[Any, int, int], T], chunk_size: int | None = None
) -> list[T]:
    """`pick(outputs, batch_row, index)` for every row, in order of `index`.

    Rows run longest first in padded chunks of `chunk_size` (default: all at once), so `outputs[batch_row]`
    is rows[index] and its first len(rows[index]) positions are real tokens.
    """
    model = ctx.model.model
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    size = chunk_size or max(len(rows), 1)
    picked: list[Any] = [None] * len(rows)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        batch = pad_batch([rows[i] for i in chunk], ctx.model.pad_id, ctx.device)
        outputs = model(**batch, **_no_cache(model))
        for row, i in enumerate(chunk):
            picked[i] = pick(outputs, row, i)
    return picked


def groups_of(counts: list[int], flat: list[T]) -> list[list[T]]:
    """Split `flat` back into consecutive groups of the given sizes (rows of each input)."""
    groups, start = [], 0
    for count in counts:
        groups.append(flat[start : start + count])
        start += count
    return groups
