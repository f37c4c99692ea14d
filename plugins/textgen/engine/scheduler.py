"""Which tokens run in the next step: decodes first, then prefill chunks, within a token and block budget."""

from __future__ import annotations

from collections import deque

from .blocks import ROOT_HASH, BlockPool, block_hash
from .request import Request, Row


class Scheduler:
    """Waiting and running requests, and the KV blocks of every layer group.

    Each step gives every running request's live rows their pending tokens: one token for a
    decoding row, a chunk of the prompt for a prefilling one, all within `max_batch_tokens`.
    Waiting requests are admitted first come, first served while tokens, blocks and
    `max_running` allow. When a running request needs a block and none is left, the newest
    running request is preempted: its blocks are released and it waits (at the front) to be
    recomputed; tokens already chosen are kept, so its output does not change.
    """

    def __init__(
        self,
        windows: list[int | None],
        num_blocks: int,
        block_size: int,
        max_batch_tokens: int,
        max_running: int,
        prefix_caching: bool,
    ) -> None:
        self.windows = windows  # per layer group
        self.pools = [BlockPool(num_blocks) for _ in windows]
        self.block_size = block_size
        self.max_batch_tokens = max_batch_tokens
        self.max_running = max_running
        self.prefix_caching = prefix_caching
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.preemptions = 0
        self.prompt_tokens = 0  # prompt tokens looked up in the prefix cache
        self.hit_tokens = 0  # of which found cached
        self.peak_used = [0] * len(windows)
        self.published_ahead: list[tuple[int, int]] = []  # (group, block) hashed before this step's forward ran

    def schedule(self) -> list[tuple[Request, int]]:
        """The work of the next step: (request, tokens per live row); blocks are allocated."""
        budget = self.max_batch_tokens
        work: list[tuple[Request, int]] = []
        decoding = [r for r in self.running if r.live_rows[0].pending == 1]
        prefilling = [r for r in self.running if r.live_rows[0].pending > 1]
        for request in decoding + prefilling:
            if request not in self.running:  # preempted for an older request this step
                continue
            width = len(request.live_rows)
            length = min(request.live_rows[0].pending, budget // width)
            if length == 0:
                continue
            while not self._reserve(request, length):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is request:
                    break
            else:
                work.append((request, length))
                budget -= length * width
        work = [(r, n) for r, n in work if r in self.running]  # drop requests preempted after being scheduled
        budget = self.max_batch_tokens - sum(n * len(r.live_rows) for r, n in work)
        while self.waiting and len(self.running) < self.max_running:
            request = self.waiting[0]
            width = len(request.live_rows)
            if request.live_rows[0].computed == 0 and not request.live_rows[0].blocks[0]:
                self._use_prefix_cache(request)
            length = min(request.live_rows[0].pending, budget // width)
            if length == 0 or not self._reserve(request, length):
                self._release(request)  # prefix hits are looked up again when it is admitted
                break
            self.waiting.popleft()
            self.running.append(request)
            work.append((request, length))
            budget -= length * width
            if self.prefix_caching:
                self._publish_ahead(request, length)
        for g, pool in enumerate(self.pools):
            self.peak_used[g] = max(self.peak_used[g], pool.used)
        return work

    def computed(self, work: list[tuple[Request, int]]) -> None:
        """The step ran: advance rows and publish their newly full blocks to the prefix cache."""
        self.published_ahead.clear()
        for request, length in work:
            for row in request.live_rows:
                row.computed += length
                if self.prefix_caching:
                    self._register_full_blocks(row)

    def step_failed(self) -> None:
        """The step's forward raised: blocks published ahead of it hold no keys/values, so forget their hashes."""
        for g, block in self.published_ahead:
            self.pools[g].unregister(block)
        self.published_ahead.clear()

    def release_row(self, row: Row) -> None:
        """A row stopped generating: its blocks go back to the pools (hashed ones stay cached)."""
        for g, pool in enumerate(self.pools):
            for block in row.blocks[g]:
                pool.release(block)
        row.reset()

    def drop(self, request: Request) -> None:
        """A request ended (finished, cancelled or failed): forget it and free its blocks."""
        self._release(request)
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)

    def _release(self, request: Request) -> None:
        for row in request.rows:
            self.release_row(row)

    def _preempt(self, request: Request) -> None:
        self._release(request)
        self.running.remove(request)
        self.waiting.appendleft(request)
        self.preemptions += 1

    def _slide(self, row: Row) -> None:
        """Release blocks that no future query of a sliding-window group can see."""
        bs = self.block_size
        for g, window in enumerate(self.windows):
            if window is None:
                continue
            blocks = row.blocks[g]
            while blocks and (row.first[g] + 1) * bs <= row.computed - window + 1:
                self.pools[g].release(blocks.pop(0))
                row.first[g] += 1

    def _reserve(self, request: Request, length: int) -> bool:
        """Allocate the blocks that `length` more tokens of every live row need; False if some pool is short."""
        bs = self.block_size
        rows = request.live_rows
        for row in rows:
            self._slide(row)
        needs = []
        for g, pool in enumerate(self.pools):
            need = [max(0, -(-(row.computed + length) // bs) - row.first[g] - len(row.blocks[g])) for row in rows]
            if sum(need) > pool.available:
                return False
            needs.append(need)
        for g, pool in enumerate(self.pools):
            for row, need in zip(rows, needs[g]):
                row.blocks[g].extend(pool.allocate() for _ in range(need))
        return True

    def _use_prefix_cache(self, request: Request) -> None:
        """Start each row after the longest run of its prompt's full blocks that every group has cached."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        for row in request.live_rows:
            self._extend_hashes(row, (len(row.tokens) - 1) // bs)  # the last token must run, for its logits
            matched: list[list[int]] = [[] for _ in self.pools]
            for digest in row.hashes[: (len(row.tokens) - 1) // bs]:
                found = [pool.lookup(digest) for pool in self.pools]
                if any(block is None for block in found):
                    break
                for g, block in enumerate(found):
                    assert block is not None
                    self.pools[g].acquire(block)
                    matched[g].append(block)
            row.blocks = matched
            row.computed = len(matched[0]) * bs
            row.registered = len(matched[0])
            if row is request.live_rows[0] and request.admitted is None:
                self.prompt_tokens += len(row.tokens)
                self.hit_tokens += row.computed

    def _extend_hashes(self, row: Row, full_blocks: int) -> None:
        bs = self.block_size
        while len(row.hashes) < full_blocks:
            i = len(row.hashes)
            parent = row.hashes[-1] if row.hashes else ROOT_HASH
            row.hashes.append(block_hash(parent, row.tokens[i * bs : (i + 1) * bs]))

    def _publish_ahead(self, request: Request, length: int) -> None:
        """Publish the full blocks this step will compute for a newly admitted request before the forward, so
        requests admitted after it in the same step share them: every layer writes the step's keys/values
        before any query of the step attends, so a later chunk reads them in the same forward. Only admitted
        requests do this: no request is preempted after admission starts, so these blocks will be computed."""
        bs = self.block_size
        for row in request.live_rows:
            full = (row.computed + length) // bs
            self._extend_hashes(row, full)
            for i in range(row.registered, full):
                for g, pool in enumerate(self.pools):
                    if i >= row.first[g] and pool.register(row.blocks[g][i - row.first[g]], row.hashes[i]):
                        self.published_ahead.append((g, row.blocks[g][i - row.first[g]]))
            row.registered = max(row.registered, full)

    def _register_full_blocks(self, row: Row) -> None:
        full = row.computed // self.block_size
        self._extend_hashes(row, full)
        for i in range(row.registered, full):
            for g, pool in enumerate(self.pools):
                if i >= row.first[g]:
                    pool.register(row.blocks[g][i - row.first[g]], row.hashes[i])
        row.registered = max(row.registered, full)
