"""One forward per engine step: every scheduled token of every request flattened into a single batch row."""

from __future__ import annotations

import torch

from ..model import Transformer
from .paged import BlockQueries, Chunk, DecodeStep, GroupStep, LoneRow, PagedKVStore, PagedStep
from .request import Request, Row


class ModelRunner:
    """Turns the scheduler's work into tensors, runs the model once, returns next-token logits.

    Linear layers see all N tokens of the step as one matrix; attention runs once for all
    decoding rows (one query each, block by block over blocks read in place) and once per
    prefill chunk.
    """

    def __init__(
        self, model: Transformer, store: PagedKVStore, windows: list[int | None], pools_fresh: list[list[int]]
    ):
        self.model = model
        self.store = store
        self.windows = windows
        self.pools_fresh = pools_fresh  # per group: blocks handed out for the first time (zeroed before use)
        self.device = model.tok_embeddings.weight.device
        self.dtype = model.tok_embeddings.weight.dtype
        self.scales = [layer.attention.scale for layer in model.layers]

    def forward(
        self, work: list[tuple[Request, int]]
    ) -> tuple[torch.Tensor, list[tuple[Request, list[tuple[int, int]]]]]:
        """Logits [M, V] fp32 of every row whose pending tokens all ran; per request (row index, logits row) pairs."""
        for g, fresh in enumerate(self.pools_fresh):
            if fresh:
                self.store.zero(g, fresh)
                fresh.clear()
        entries = [(request, row, length) for request, length in work for row in request.live_rows]
        entries.sort(key=lambda e: e[2] > 1)  # decoding rows first
        ids: list[int] = []
        positions: list[int] = []
        logits_at: list[int] = []
        owners: dict[int, tuple[Request, list[tuple[int, int]]]] = {}
        for request, row, length in entries:
            ids.extend(row.tokens[row.computed : row.computed + length])
            positions.extend(range(row.computed, row.computed + length))
            if row.computed + length == len(row.tokens):
                logits_at.append(len(ids) - 1)
                owners.setdefault(id(request), (request, []))[1].append((request.rows.index(row), len(logits_at) - 1))
        n_decode = sum(1 for e in entries if e[2] == 1)
        groups = {w: self._group_step(g, w, entries, n_decode) for g, w in enumerate(self.windows)}
        idx = torch.tensor([ids], device=self.device)  # [1, N]
        pos = torch.tensor([positions], device=self.device)
        at = torch.tensor(logits_at, dtype=torch.long, device=self.device)
        step = PagedStep(self.store, groups, self.scales, self.model.cfg.attn_softcap)
        logits = self.model(idx, pos, torch.ones_like(idx, dtype=torch.bool), step, logits_at=at)[0].float()
        return logits, list(owners.values())

    def _group_step(
        self, g: int, window: int | None, entries: list[tuple[Request, Row, int]], n_decode: int
    ) -> GroupStep:
        bs = self.store.block_size
        slots: list[int] = []
        for _, row, length in entries:
            blocks, first = row.blocks[g], row.first[g]
            slots.extend(blocks[p // bs - first] * bs + p % bs for p in range(row.computed, row.computed + length))
        decode = self._decode_step(g, window, [row for _, row, _ in entries[:n_decode]])
        chunks = []
        start = n_decode
        for _, row, length in entries[n_decode:]:
            table = torch.tensor(row.blocks[g])
            keys = row.first[g] * bs + torch.arange(len(row.blocks[g]) * bs)[None, :]  # [1, S]
            query = torch.arange(row.computed, row.computed + length)[:, None]  # [T, 1]
            mask = self._visible(keys, query, window)[None, None]  # [1, 1, T, S]
            chunks.append(Chunk(start, length, table.to(self.device), mask.to(self.device)))
            start += length
        return GroupStep(torch.tensor(slots, device=self.device), decode, chunks)

    def _decode_step(self, g: int, window: int | None, rows: list[Row]) -> DecodeStep | None:
        """Pairs (block, decoding row) of the group: each block's first reader in one in-place range when the
        blocks lie dense enough in the store, later readers of shared blocks (and sparse ranges) copied."""
        if not rows:
            return None
        bs = self.store.block_size
        blocks = rows[0].blocks[g]
        if len(rows) == 1:  # a lone request, usually
            keys = rows[0].first[g] * bs + torch.arange(len(blocks) * bs)[None, :]  # [1, S]
            mask = self._visible(keys, torch.tensor([[rows[0].computed]]), window)[None, None]  # [1, 1, 1, S]
            consecutive = blocks == list(range(blocks[0], blocks[0] + len(blocks)))
            table = None if consecutive else torch.tensor(blocks, device=self.device)
            return DecodeStep(1, [], torch.empty(0), LoneRow(blocks[0], table, mask.to(self.device)))
        owner: dict[int, tuple[int, int]] = {}  # block -> (its first reader, position of its first key)
        shared: list[tuple[int, int, int]] = []  # (block, row, first key position) of later readers
        for r, row in enumerate(rows):
            for j, block in enumerate(row.blocks[g]):
                start = (row.first[g] + j) * bs
                if block in owner:
                    shared.append((block, r, start))
                else:
                    owner[block] = (r, start)
        lo, hi = min(owner), max(owner) + 1
        parts, index = [], {}
        if hi - lo <= 2 * len(owner):  # dense: read the range in place; blocks nobody reads see only key 0
            readers = [owner.get(b, (0, 0)) for b in range(lo, hi)]
            queries = [rows[r].computed if b in owner else 0 for b, (r, _) in zip(range(lo, hi), readers)]
            parts.append(self._block_queries(lo, None, readers, queries, window))
            index = {(b, r): b - lo for b, (r, _) in owner.items()}
        else:
            shared = [(b, r, start) for b, (r, start) in owner.items()] + shared
        if shared:
            base = hi - lo if parts else 0
            index.update({(b, r): base + i for i, (b, r, _) in enumerate(shared)})
            blocks = torch.tensor([b for b, _, _ in shared], device=self.device)
            readers = [(r, start) for _, r, start in shared]
            parts.append(self._block_queries(0, blocks, readers, [rows[r].computed for r, _ in readers], window))
        pairs = sum(len(p.rows) for p in parts)
        width = max(len(row.blocks[g]) for row in rows)
        merge = [
            [index[b, r] for b in row.blocks[g]] + [pairs] * (width - len(row.blocks[g])) for r, row in enumerate(rows)
        ]
        return DecodeStep(len(rows), parts, torch.tensor(merge, device=self.device))

    def _block_queries(
        self,
        lo: int,
        blocks: torch.Tensor | None,
        readers: list[tuple[int, int]],
        queries: list[int],
        window: int | None,
    ) -> BlockQueries:
        """(row, first key position) of each block's reader and the reader's query position -> the pairs' masks."""
        keys = torch.tensor([start for _, start in readers])[:, None] + torch.arange(self.store.block_size)[None, :]
        visible = self._visible(keys, torch.tensor(queries)[:, None], window)  # [P, block_size]
        mask = torch.zeros(visible.shape, dtype=self.dtype).masked_fill_(~visible, float("-inf"))
        rows = torch.tensor([r for r, _ in readers], device=self.device)
        return BlockQueries(lo, blocks, rows, mask[:, None, None, :].to(self.device))

    @staticmethod
    def _visible(key_pos: torch.Tensor, query_pos: torch.Tensor, window: int | None) -> torch.Tensor:
        """Causal (and sliding-window) visibility of keys at key_pos for queries at query_pos (broadcast)."""
        visible = key_pos <= query_pos
        if window is not None:
            visible &= key_pos > query_pos - window
        return visible
