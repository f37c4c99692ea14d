"""Paged key/value storage and the per-step view through which the model writes and attends over it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..kv_cache import AttendFn


class PagedKVStore:
    """Keys and values in fixed-size blocks, one storage per layer group (layers sharing a window size).

    k[g] is [layers of group g, num_blocks, block_size, kv_heads, head_dim]: a block holds
    `block_size` consecutive tokens of one sequence for every layer of its group. Storage is
    allocated with torch.empty, so pages are committed only as blocks are first used.
    """

    def __init__(
        self,
        group_layers: list[list[int]],
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.block_size = block_size
        self.k = [
            torch.empty(len(g), num_blocks, block_size, kv_heads, head_dim, dtype=dtype, device=device)
            for g in group_layers
        ]
        self.v = [torch.empty_like(k) for k in self.k]
        self.where = {layer: (g, i) for g, layers in enumerate(group_layers) for i, layer in enumerate(layers)}

    def zero(self, group: int, blocks: list[int]) -> None:
        """Blocks used for the first time: clear them, so padding slots never hold NaN garbage."""
        index = torch.tensor(blocks, device=self.k[group].device)
        self.k[group].index_fill_(1, index, 0)
        self.v[group].index_fill_(1, index, 0)

    def layer(self, layer: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Group index and the k, v storage [num_blocks, block_size, kv_heads, head_dim] of `layer`."""
        g, i = self.where[layer]
        return g, self.k[g][i], self.v[g][i]


@dataclass
class DecodeRows:
    """Consecutive sequences that add one token this step, attended as one padded batch."""

    start: int  # first of their tokens in the step's flat batch
    count: int  # rows
    tables: torch.Tensor  # [B, max_blocks] live block ids, padded by repeating the last block
    mask: torch.Tensor  # [B, 1, 1, max_blocks * block_size] True = the query sees that key


@dataclass
class Chunk:
    """A run of several tokens of one sequence (a prefill chunk), attended on its own."""

    start: int  # first token of the chunk in the step's flat batch
    length: int  # tokens
    table: torch.Tensor  # [blocks] live block ids of the sequence, up to the chunk's end
    mask: torch.Tensor  # [1, 1, length, blocks * block_size]


@dataclass
class GroupStep:
    """What a forward needs for the layers of one group: where tokens go, what each query sees."""

    slots: torch.Tensor  # [N] flat slot (block * block_size + offset) of every token of the step
    decode: list[DecodeRows]  # decoding rows in buckets of similar length (little padding)
    chunks: list[Chunk]


class PagedStep:
    """The model's cache for one engine step (implements kv_cache.Cache over a PagedKVStore).

    The step's tokens are flattened into one row of N tokens: first one token per decoding
    sequence (shortest context first), then the prefill chunks. Keys/values are written to their slots, then each
    query attends over its own sequence's blocks, gathered into SDPA's layout.
    """

    def __init__(self, store: PagedKVStore, groups: dict[int | None, GroupStep]) -> None:
        self.store = store
        self.groups = groups  # window size -> the step of the layers with that window

    def prepare(self, valid: torch.Tensor, windows: set[int | None]) -> dict[int | None, Any]:
        return self.groups

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, attend_fn: AttendFn
    ) -> torch.Tensor:
        """q [1, heads, N, hd], k, v [1, kv_heads, N, hd] of the flat step -> [1, heads, N, hd]."""
        _, k_store, v_store = self.store.layer(layer)
        step: GroupStep = mask
        kvh, hd = k_store.shape[2:]
        k_store.view(-1, kvh, hd).index_copy_(0, step.slots, k[0].transpose(0, 1))
        v_store.view(-1, kvh, hd).index_copy_(0, step.slots, v[0].transpose(0, 1))
        parts = []
        for d in step.decode:
            B = d.count
            flat = d.tables.view(-1)  # index_select copies whole blocks; k_store[tables] is ~3x slower on CPU
            keys = k_store.index_select(0, flat).view(B, -1, kvh, hd).transpose(1, 2)  # [B, kv_heads, S, hd]
            values = v_store.index_select(0, flat).view(B, -1, kvh, hd).transpose(1, 2)
            q_rows = q[0, :, d.start : d.start + B].transpose(0, 1).unsqueeze(2)  # [B, heads, 1, hd]
            out = attend_fn(q_rows, keys, values, d.mask)  # [B, heads, 1, hd]
            parts.append(out.squeeze(2).transpose(0, 1).unsqueeze(0))  # [1, heads, B, hd]
        for c in step.chunks:
            keys = k_store.index_select(0, c.table).view(1, -1, kvh, hd).transpose(1, 2)  # [1, kv_heads, S, hd]
            values = v_store.index_select(0, c.table).view(1, -1, kvh, hd).transpose(1, 2)
            parts.append(attend_fn(q[:, :, c.start : c.start + c.length], keys, values, c.mask))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
