"""One forward per engine step: every scheduled token of every request flattened into a single batch row."""

from __future__ import annotations

import torch

from ..model import Transformer
from .paged import Chunk, DecodeRows, GroupStep, PagedKVStore, PagedStep
from .request import Request, Row


class ModelRunner:
    """Turns the scheduler's work into tensors, runs the model once, returns next-token logits.

    Linear layers see all N tokens of the step as one matrix; attention runs once for all
    decoding rows (one query each, their blocks gathered into a padded batch) and once per
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

    def forward(
        self, work: list[tuple[Request, int]]
    ) -> tuple[torch.Tensor, list[tuple[Request, list[tuple[int, int]]]]]:
        """Logits [M, V] fp32 of every row whose pending tokens all ran; per request (row index, logits row) pairs."""
        for g, fresh in enumerate(self.pools_fresh):
            if fresh:
                self.store.zero(g, fresh)
                fresh.clear()
        entries = [(request, row, length) for request, length in work for row in request.live_rows]
        entries.sort(key=lambda e: (e[2] > 1, e[1].computed if e[2] == 1 else 0))  # decoding rows first, shortest first
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
        step = PagedStep(self.store, groups)
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
        decode = [self._decode_rows(g, window, entries, lo, hi) for lo, hi in self._buckets(g, entries[:n_decode])]
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

    @staticmethod
    def _buckets(g: int, decoding: list[tuple[Request, Row, int]]) -> list[tuple[int, int]]:
        """Split rows (sorted by context length) into runs whose longest is at most twice the shortest + 4 blocks."""
        out: list[tuple[int, int]] = []
        lo = 0
        for i, (_, row, _) in enumerate(decoding):
            if len(row.blocks[g]) > 2 * len(decoding[lo][1].blocks[g]) + 4:
                out.append((lo, i))
                lo = i
        if decoding:
            out.append((lo, len(decoding)))
        return out

    def _decode_rows(
        self, g: int, window: int | None, entries: list[tuple[Request, Row, int]], lo: int, hi: int
    ) -> DecodeRows:
        bs = self.store.block_size
        rows = [row for _, row, _ in entries[lo:hi]]
        width = max(len(row.blocks[g]) for row in rows)
        tables = torch.tensor([row.blocks[g] + [row.blocks[g][-1]] * (width - len(row.blocks[g])) for row in rows])
        first = torch.tensor([row.first[g] * bs for row in rows])[:, None]  # [B, 1]
        query = torch.tensor([row.computed for row in rows])[:, None]
        mask = self._visible(first + torch.arange(width * bs)[None, :], query, window)  # [B, S]
        return DecodeRows(lo, hi - lo, tables.to(self.device), mask[:, None, None, :].to(self.device))

    @staticmethod
    def _visible(key_pos: torch.Tensor, query_pos: torch.Tensor, window: int | None) -> torch.Tensor:
        """Causal (and sliding-window) visibility of keys at key_pos for queries at query_pos (broadcast)."""
        visible = key_pos <= query_pos
        if window is not None:
            visible &= key_pos > query_pos - window
        return visible
