"""One forward per engine step: every scheduled token of every request flattened into a single batch row."""

from __future__ import annotations

import torch

from taskhub.native import native_ops_available

from ..model import Transformer
from .paged import Gathered, GroupStep, InPlaceDecode, PagedKVStore, PagedStep
from .request import Request, Row

# one more attention call per layer costs about as much as attending this many padding blocks (measured:
# benchmarks/engine_step.py, docs/performance.md)
PAD_BLOCKS_PER_CALL = 32


class ModelRunner:
    """Turns the scheduler's work into tensors, runs the model once, returns next-token logits.

    Linear layers see all N tokens of the step as one matrix; attention runs once for all decoding
    rows, read in place by taskhub's paged decode kernel where it serves the model (else once per run
    of decoding rows of similar context length, their blocks gathered into one padded batch), and
    once per prefill chunk.
    """

    def __init__(
        self, model: Transformer, store: PagedKVStore, windows: list[int | None], pools_fresh: list[list[int]]
    ):
        self.model = model
        self.store = store
        self.windows = windows
        self.pools_fresh = pools_fresh  # per group: blocks handed out for the first time (zeroed before use)
        self.device = model.tok_embeddings.weight.device
        self.decode_scales = self._in_place_decode_scales(model)

    @staticmethod
    def _in_place_decode_scales(model: Transformer) -> dict[int, float] | None:
        """Per layer attention scale when taskhub's paged decode kernel can attend every layer's decoding rows
        (CPU, fp32/bf16, no score soft-capping, head_dim a multiple of 16 up to 256, <= 8 heads per kv head)."""
        cfg, p = model.cfg, model.tok_embeddings.weight
        fits = (
            p.is_cpu
            and p.dtype in (torch.float32, torch.bfloat16)
            and cfg.attn_softcap is None
            and cfg.head_dim % 16 == 0
            and cfg.head_dim <= 256
            and cfg.n_heads // cfg.n_kv_heads <= 8
        )
        if not fits or not native_ops_available():
            return None
        return {i: block.attention.scale for i, block in enumerate(model.layers)}

    def forward(
        self, work: list[tuple[Request, int]]
    ) -> tuple[torch.Tensor, list[tuple[Request, list[tuple[int, int]]]]]:
        """Logits [M, V] fp32 of every row whose pending tokens all ran; per request (row index, logits row) pairs."""
        for g, fresh in enumerate(self.pools_fresh):
            if fresh:
                self.store.zero(g, fresh)
                fresh.clear()
        entries = [(request, row, length) for request, length in work for row in request.live_rows]
        entries.sort(key=lambda e: (e[2] > 1, -e[1].computed if e[2] == 1 else 0))  # decoding rows first, longest first
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
        parts: list[Gathered | InPlaceDecode] = []
        start = 0
        if self.decode_scales is not None and n_decode:
            parts.append(self._in_place(g, window, [row for _, row, _ in entries[:n_decode]]))
            start = n_decode
        for rows in self._buckets([row for _, row, _ in entries[start:n_decode]], g):
            parts.append(self._gathered(g, window, start, rows, 1))
            start += len(rows)
        for _, row, length in entries[n_decode:]:
            parts.append(self._gathered(g, window, start, [row], length))
            start += length
        return GroupStep(torch.tensor(slots, device=self.device), parts)

    @staticmethod
    def _buckets(rows: list[Row], g: int) -> list[list[Row]]:
        """Decoding rows (longest first) cut into runs attended together: a row starts a new run when padding
        the rest to the current run's width would cost more than another attention call."""
        runs: list[list[Row]] = []
        width = 0
        for i, row in enumerate(rows):
            blocks = len(row.blocks[g])
            if not runs or (width - blocks) * (len(rows) - i) > PAD_BLOCKS_PER_CALL:
                runs.append([])
                width = blocks
            runs[-1].append(row)
        return runs

    @staticmethod
    def _block_table(rows: list[Row], g: int) -> list[list[int]]:
        """Each row's blocks in group g, padded to the widest by repeating the row's first block (its keys lie
        past the row's query in a padded batch, and past its key count for the in-place kernel: never seen)."""
        width = max(len(row.blocks[g]) for row in rows)
        return [row.blocks[g] + row.blocks[g][:1] * (width - len(row.blocks[g])) for row in rows]

    def _in_place(self, g: int, window: int | None, rows: list[Row]) -> InPlaceDecode:
        """Decoding rows attended by the paged decode kernel: their block tables and visible key ranges."""
        assert self.decode_scales is not None
        bs = self.store.block_size
        table = self._block_table(rows, g)
        keys = [row.computed - row.first[g] * bs + 1 for row in rows]
        first = [0 if window is None else max(0, n - window) for n in keys]
        return InPlaceDecode(
            0,
            len(rows),
            torch.tensor(table, device=self.device),
            torch.tensor(first, device=self.device),
            torch.tensor(keys, device=self.device),
            self.decode_scales,
        )

    def _gathered(self, g: int, window: int | None, start: int, rows: list[Row], length: int) -> Gathered:
        """`rows` (each with `length` queries from its first uncomputed token) attending together in group g."""
        bs = self.store.block_size
        width = max(len(row.blocks[g]) for row in rows)
        blocks = rows[0].blocks[g]
        table, lo = None, blocks[0]
        if len(rows) > 1 or blocks != list(range(lo, lo + len(blocks))):
            table = torch.tensor(self._block_table(rows, g), device=self.device).flatten()
        firsts = torch.tensor([row.first[g] for row in rows])
        keys = firsts[:, None, None] * bs + torch.arange(width * bs)  # [seqs, 1, S] key positions
        queries = torch.tensor([row.computed for row in rows])[:, None, None] + torch.arange(length)[:, None]
        mask = self._visible(keys, queries, window)  # [seqs, length, S]
        return Gathered(start, len(rows), length, width, table, lo, mask[:, None].to(self.device))

    @staticmethod
    def _visible(key_pos: torch.Tensor, query_pos: torch.Tensor, window: int | None) -> torch.Tensor:
        """Causal (and sliding-window) visibility of keys at key_pos for queries at query_pos (broadcast)."""
        visible = key_pos <= query_pos
        if window is not None:
            visible &= key_pos > query_pos - window
        return visible
