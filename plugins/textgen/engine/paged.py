"""Paged key/value storage and the per-step view through which the model writes and attends over it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from taskhub.native import paged_decode_attention

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
class Gathered:
    """Sequences that attend together: `seqs` sequences of `length` queries each, consecutive in the step's
    flat batch from `start`, their blocks gathered into one padded batch (SDPA's layout, one call).

    Decoding rows (one query each) of similar context length share one; a prefill chunk is one on its own.
    A single sequence whose blocks lie consecutive in the store is read in place (a view, no copy): a lone
    request's blocks usually do, so batch 1 attends exactly as the static cache does.
    """

    start: int  # first query of the first sequence in the step's flat batch
    seqs: int  # sequences
    length: int  # queries per sequence
    blocks: int  # blocks per sequence (the longest; shorter ones are padded with masked keys)
    table: torch.Tensor | None  # [seqs * blocks] store blocks, sequence-major; None: blocks lo.. read in place
    lo: int  # first store block when `table` is None
    mask: torch.Tensor  # [seqs, 1, length, blocks * block_size] bool: True where the query sees the key


@dataclass
class InPlaceDecode:
    """Decoding rows (one query each) attended by taskhub's paged decode kernel, which reads every row's keys and
    values straight from its blocks: no gather copy, no padding, no mask (taskhub.native.paged_decode_attention)."""

    start: int  # first query in the step's flat batch
    seqs: int  # rows, consecutive from `start`
    table: torch.Tensor  # [seqs, blocks] int64: each row's store blocks in order (short rows repeat their first)
    first_key: torch.Tensor  # [seqs] int64: first visible key, counted from the row's first block
    keys: torch.Tensor  # [seqs] int64: keys up to and including the query's own, counted the same way
    scales: dict[int, float]  # per layer: the attention scale


@dataclass
class GroupStep:
    """What a forward needs for the layers of one group: where tokens go, what each query sees."""

    slots: torch.Tensor  # [N] flat slot (block * block_size + offset) of every token of the step
    parts: list[Gathered | InPlaceDecode]  # covering the step's N queries in order


class PagedStep:
    """The model's cache for one engine step (implements kv_cache.Cache over a PagedKVStore).

    The step's tokens are flattened into one row of N tokens: first one token per decoding
    sequence, then the prefill chunks. Keys/values are written to their slots; then each part
    attends: all decoding rows in place through the paged decode kernel (InPlaceDecode), or, where
    that kernel does not serve the model, decoding rows of similar length together and each prefill
    chunk alone, their blocks gathered into SDPA's layout with `index_select`, through the layer's
    own attention math.
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
        h = q.shape[1]
        k_store.view(-1, kvh, hd).index_copy_(0, step.slots, k[0].transpose(0, 1))
        v_store.view(-1, kvh, hd).index_copy_(0, step.slots, v[0].transpose(0, 1))
        outs = []
        for part in step.parts:
            if isinstance(part, InPlaceDecode):
                queries = q[0, :, part.start : part.start + part.seqs].transpose(0, 1)  # [seqs, heads, hd]
                out = paged_decode_attention(
                    queries, k_store, v_store, part.table, part.first_key, part.keys, part.scales[layer]
                )
                outs.append(out.transpose(0, 1))
                continue
            n, t = part.seqs, part.length
            queries = q[0, :, part.start : part.start + n * t].view(h, n, t, hd).transpose(0, 1)  # [n, heads, t, hd]
            out = attend_fn(queries, _gather(k_store, part), _gather(v_store, part), part.mask)  # [n, heads, t, hd]
            outs.append(out.transpose(0, 1).reshape(h, n * t, hd))
        return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)).unsqueeze(0)


def _gather(store: torch.Tensor, part: Gathered) -> torch.Tensor:
    """The part's keys or values [seqs, kv_heads, blocks * block_size, hd] from store [num_blocks, bs, kvh, hd]."""
    if part.table is None:
        blocks = store[part.lo : part.lo + part.blocks]
    else:
        blocks = store.index_select(0, part.table)  # ~3x faster than advanced indexing on CPU
    return blocks.view(part.seqs, -1, *store.shape[2:]).transpose(1, 2)
