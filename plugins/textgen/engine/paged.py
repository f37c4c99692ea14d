"""Paged key/value storage and the per-step view through which the model writes and attends over it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..kv_cache import AttendFn
from ..model import soft_cap


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
class BlockQueries:
    """Blocks that decoding rows attend, each (block, row) pair one small attention problem.

    A pair is one block read by one decoding row's query; the block's keys/values are either
    read in place from a range of the store (`lo`..`lo + len(rows)`, no copy) or copied out by
    index_select (blocks several rows share, or a range too sparse to read whole).
    """

    lo: int  # first store block of the range read in place (only with `blocks is None`)
    blocks: torch.Tensor | None  # [P] store blocks copied out, or None: the range lo..lo+P is read in place
    rows: torch.Tensor  # [P] decoding row whose query meets each block
    mask: torch.Tensor  # [P, 1, 1, block_size] float: 0 where the row sees the key, -inf where not


@dataclass
class LoneRow:
    """A step's only decoding row (a lone request, usually): its blocks attended as one sequence by SDPA.

    Consecutive blocks are a view of the store; others are gathered (a copy of one row's context,
    cheaper than the block-by-block merge at batch 1).
    """

    lo: int  # first store block when the blocks are consecutive
    table: torch.Tensor | None  # [blocks] store blocks to gather, or None: the range lo.. is read in place
    mask: torch.Tensor  # [1, 1, 1, S] bool: True where the query sees the key


@dataclass
class DecodeStep:
    """The decoding rows of a step (one query each, the first `count` tokens), attended block by block.

    Each pair gives a partial attention output and its log-sum-exp; `merge` lists each row's
    pairs (padded with the index one past the last pair, an empty entry), and a softmax over
    their log-sum-exps weighs them into the row's exact attention over all its keys.
    """

    count: int
    parts: list[BlockQueries]
    merge: torch.Tensor  # [count, most pairs of a row] indexes into the pairs of all parts, in order
    lone: LoneRow | None = None  # the only decoding row: attended as one sequence, as the static cache's row is


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
    decode: DecodeStep | None  # the decoding rows (None: no row decodes this step)
    chunks: list[Chunk]


class PagedStep:
    """The model's cache for one engine step (implements kv_cache.Cache over a PagedKVStore).

    The step's tokens are flattened into one row of N tokens: first one token per decoding
    sequence, then the prefill chunks. Keys/values are written to their slots. Decoding queries
    attend block by block (blocks read in place, partial results merged by log-sum-exp), so a
    decode step never copies the context; each prefill chunk attends its sequence's blocks
    gathered into SDPA's layout, through the layer's own attention math.
    """

    def __init__(
        self, store: PagedKVStore, groups: dict[int | None, GroupStep], scales: list[float], softcap: float | None
    ) -> None:
        self.store = store
        self.groups = groups  # window size -> the step of the layers with that window
        self.scales = scales  # per layer: the attention scale
        self.softcap = softcap  # attention soft-capping of the model (Gemma 2), if any

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
        if step.decode is not None:
            parts.append(self._attend_decode(step.decode, q, k_store, v_store, self.scales[layer], attend_fn))
        for c in step.chunks:
            keys = k_store.index_select(0, c.table).view(1, -1, kvh, hd).transpose(1, 2)  # [1, kv_heads, S, hd]
            values = v_store.index_select(0, c.table).view(1, -1, kvh, hd).transpose(1, 2)
            parts.append(attend_fn(q[:, :, c.start : c.start + c.length], keys, values, c.mask))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def _attend_decode(
        self,
        d: DecodeStep,
        q: torch.Tensor,
        k_store: torch.Tensor,
        v_store: torch.Tensor,
        scale: float,
        attend_fn: AttendFn,
    ) -> torch.Tensor:
        """Decoding rows' attention [1, heads, count, hd], block by block, merged by log-sum-exp."""
        B, (h, hd), kvh = d.count, q.shape[1::2], k_store.shape[2]
        if d.lone is not None:
            lone, n = d.lone, d.lone.mask.shape[-1] // k_store.shape[1]
            if lone.table is None:
                keys, values = k_store[lone.lo : lone.lo + n], v_store[lone.lo : lone.lo + n]
            else:
                keys, values = k_store.index_select(0, lone.table), v_store.index_select(0, lone.table)
            keys = keys.view(1, -1, kvh, hd).transpose(1, 2)  # [1, kv_heads, S, hd]
            values = values.view(1, -1, kvh, hd).transpose(1, 2)
            return attend_fn(q[:, :, :1], keys, values, lone.mask)
        q_rows = q[0, :, :B].transpose(0, 1).reshape(B, kvh, h // kvh, hd)  # [B, kv_heads, heads per kv head, hd]
        outs, lses = [], []
        for part in d.parts:
            if part.blocks is None:  # [P, kv_heads, block_size, hd] views of the store: no copy
                keys = k_store[part.lo : part.lo + len(part.rows)].transpose(1, 2)
                values = v_store[part.lo : part.lo + len(part.rows)].transpose(1, 2)
            else:
                keys = k_store.index_select(0, part.blocks).transpose(1, 2)
                values = v_store.index_select(0, part.blocks).transpose(1, 2)
            out, lse = block_attention(q_rows.index_select(0, part.rows), keys, values, part.mask, scale, self.softcap)
            outs.append(out.float())
            lses.append(lse)
        outs.append(outs[0].new_zeros(1, *outs[0].shape[1:]))  # the empty entry that pads `merge`
        lses.append(lses[0].new_full((1, *lses[0].shape[1:]), float("-inf")))
        weights = torch.cat(lses).index_select(0, d.merge.view(-1)).view(*d.merge.shape, kvh, -1).softmax(dim=1)
        pieces = torch.cat(outs).index_select(0, d.merge.view(-1)).view(*d.merge.shape, kvh, -1, hd)
        y = (pieces * weights[..., None]).sum(dim=1).to(q.dtype)  # [B, kv_heads, heads per kv head, hd]
        return y.view(B, h, hd).transpose(0, 1).unsqueeze(0)


def block_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float, softcap: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [P, kvh, g, hd] (a kv head's query heads as rows) over one block each, k, v [P, kvh, bs, hd], mask
    [P, 1, 1, bs] additive -> output [P, kvh, g, hd] and log-sum-exp [P, kvh, g] (fp32) of the scores.

    PyTorch's CPU flash kernel returns the log-sum-exp beside the output; with soft-capping the
    scores are computed explicitly, in transformers' order (scale, cap, mask, fp32 softmax)."""
    if softcap is None:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask, scale=scale)
        return out, lse
    scores = (soft_cap(q @ k.transpose(-1, -2) * scale, softcap) + mask).float()  # [P, kvh, g, bs]
    lse = scores.logsumexp(dim=-1)
    return (scores - lse[..., None]).exp().to(q.dtype) @ v, lse
