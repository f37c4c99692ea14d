"""The generation engine of one loaded native decoder: submit requests from any thread, one forward per step."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from taskhub.errors import BadInputError, ParamError, TaskhubError

from ..backend import PromptBatch
from ..config import GenerationConfig
from ..generate import SamplingRun
from ..metrics import MetricsClock
from ..model import Transformer
from .paged import PagedKVStore
from .request import Request, RequestCancelled, RequestHandle
from .runner import ModelRunner
from .scheduler import Scheduler

DEFAULT_CACHE_SHARE = 0.25  # of the memory available when the engine starts


def default_cache_bytes() -> int:
    """A quarter of the physical memory available now (2 GiB when the OS does not say)."""
    try:
        return int(DEFAULT_CACHE_SHARE * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def engine_supports(model: Transformer) -> bool:
    """Whether the engine reproduces the model's static decoding: dynamic NTK RoPE depends on the batch, and
    LongRoPE recomputes the whole cache when a sequence first passes its original context (native_backend)."""
    rope = model.cfg.rope
    return rope is None or rope.rope_type not in ("dynamic", "longrope")


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's load and cache."""

    running: int  # requests in the running batch
    waiting: int  # requests queued (new or preempted)
    blocks_used: int  # KV blocks referenced by running requests (all layer groups)
    blocks_free: int  # blocks free or holding evictable cached prefixes
    block_size: int  # tokens per block
    cache_bytes: int  # the KV budget (kv_cache_bytes)
    peak_cache_bytes: int  # most bytes of blocks in use at once
    prefix_hit_rate: float  # share of prompt tokens whose keys/values came from the prefix cache
    preemptions: int  # times a running request was evicted to be recomputed later
    steps: int  # forwards run


class Engine:
    """Continuous batching over a paged KV cache for one native decoder.

    Requests from any thread wait in a queue; every step runs ONE forward over one decode
    token of each running request plus prefill chunks of newly admitted ones (at most
    `max_batch_tokens` tokens), then each request picks its next token with its own
    processors and seeded generator. Finished requests leave at once, waiting ones take
    their place. With `background=True` a daemon thread steps whenever there is work;
    without, whoever waits on a handle runs the steps (tests drive `step()` directly).
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Any = None,
        *,
        kv_cache_bytes: int | None = None,
        block_size: int = 16,
        max_batch_tokens: int = 512,
        max_running: int = 128,
        prefix_caching: bool = True,
        background: bool = True,
    ) -> None:
        if not engine_supports(model):
            raise ParamError("The engine does not serve models with dynamic NTK RoPE; use the static path.")
        if block_size < 1 or max_batch_tokens < 1 or max_running < 1:
            raise ParamError("block_size, max_batch_tokens and max_running must be positive.")
        self.model, self.tokenizer = model, tokenizer
        cfg = model.cfg
        p = model.tok_embeddings.weight
        windows = sorted({cfg.window(i) for i in range(cfg.n_layers)}, key=lambda w: -1 if w is None else w)
        group_layers = [[i for i in range(cfg.n_layers) if cfg.window(i) == w] for w in windows]
        self.block_bytes = 2 * cfg.n_layers * block_size * cfg.n_kv_heads * cfg.head_dim * p.element_size()
        self.cache_bytes = default_cache_bytes() if kv_cache_bytes is None else int(kv_cache_bytes)
        num_blocks = self.cache_bytes // self.block_bytes
        if num_blocks < 1:
            raise ParamError(
                f"kv_cache_bytes={self.cache_bytes} holds no block; one block takes {self.block_bytes} bytes."
            )
        self.group_bytes = [self.block_bytes * len(layers) // cfg.n_layers for layers in group_layers]
        self.store = PagedKVStore(group_layers, num_blocks, block_size, cfg.n_kv_heads, cfg.head_dim, p.dtype, p.device)
        self.scheduler = Scheduler(windows, num_blocks, block_size, max_batch_tokens, max_running, prefix_caching)
        self.runner = ModelRunner(model, self.store, windows, [pool.fresh for pool in self.scheduler.pools])
        self.windows = windows
        self.num_blocks = num_blocks
        self.steps = 0
        self._incoming: list[Request] = []
        self._cancelled: list[Request] = []
        self._wake = threading.Condition()
        self._step_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._background = background
        self._closed = False

    # ---- submitting -------------------------------------------------------------------
    def submit(
        self, prompt: str | Sequence[int], config: GenerationConfig | None = None, *, stream: bool = False
    ) -> RequestHandle:
        """Queue one prompt (text or token ids); the handle gives its result, text deltas, or cancels it."""
        config = config or GenerationConfig()
        ids = self._prompt_ids(prompt)
        self._check(ids, config)
        if self._closed:
            raise TaskhubError("The engine is closed.")
        with torch.inference_mode():
            batch = PromptBatch(
                torch.tensor([ids], device=self.runner.device), torch.ones(1, len(ids), dtype=torch.long)
            )
            try:
                run = SamplingRun(
                    None, batch, config, self.tokenizer, stream_text=stream, vocab_size=self.model.cfg.vocab_size
                )
            except ValueError as exc:  # controls that do not fit this model (stop strings without tokenizer, ...)
                raise ParamError(str(exc)) from None
            run.clock = MetricsClock(self.runner.device)  # TTFT counts from submission
        request = Request(ids, run, len(self.windows), stream)
        if config.max_new_tokens == 0:
            request.finish()
        else:
            with self._wake:
                self._incoming.append(request)
                self._wake.notify()
            self._ensure_thread()
        return RequestHandle(request, self._cancel, None if self._background else self.step)

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise BadInputError("A text prompt needs the engine's tokenizer; pass token ids instead.")
            return list(self.tokenizer(prompt)["input_ids"])
        ids = [int(t) for t in prompt]
        if any(not 0 <= t < self.model.cfg.vocab_size for t in ids):
            raise BadInputError(f"Prompt token ids must lie in [0, {self.model.cfg.vocab_size}).")
        return ids

    def _check(self, ids: list[int], config: GenerationConfig) -> None:
        if not ids:
            raise BadInputError("The prompt is empty; the engine needs at least one token.")
        if config.num_beams > 1:
            raise ParamError(
                "The engine samples or decodes greedily; beam search (num_beams > 1) runs on the static path."
            )
        total = len(ids) + config.max_new_tokens
        if self.model.pos_embeddings is not None and total > self.model.cfg.max_position_embeddings:
            raise ParamError(
                f"prompt + max_new_tokens = {total} exceeds the model's {self.model.cfg.max_position_embeddings} positions."
            )
        rows = config.num_return_sequences
        if rows > self.scheduler.max_batch_tokens:
            raise ParamError(f"num_return_sequences={rows} exceeds max_batch_tokens={self.scheduler.max_batch_tokens}.")
        bs = self.store.block_size
        for window in self.windows:
            per_row = -(-total // bs)
            if window is not None:  # blocks that leave the window are freed
                per_row = min(per_row, -(-(window + self.scheduler.max_batch_tokens) // bs) + 1)
            if rows * per_row > self.num_blocks:
                raise ParamError(
                    f"The request needs up to {rows * per_row} KV blocks ({rows * per_row * self.block_bytes} bytes); "
                    f"kv_cache_bytes={self.cache_bytes} holds {self.num_blocks}."
                )

    def _cancel(self, request: Request) -> None:
        with self._wake:
            self._cancelled.append(request)
            self._wake.notify()

    # ---- stepping ---------------------------------------------------------------------
    def step(self) -> bool:
        """Run one step (admit, one forward, pick tokens, retire finished requests); False when idle."""
        with self._step_lock, torch.inference_mode():
            with self._wake:
                incoming, self._incoming = self._incoming, []
                cancelled, self._cancelled = self._cancelled, []
            self.scheduler.waiting.extend(incoming)
            for request in cancelled:
                if not request.done.is_set():
                    self.scheduler.drop(request)
                    request.fail(RequestCancelled("The request was cancelled."))
            work = self.scheduler.schedule()
            if not work:
                return False
            now = time.perf_counter()
            for request, _ in work:
                if request.admitted is None:
                    request.admitted = now
            try:
                logits, owners = self.runner.forward(work)
            except BaseException as exc:
                self.scheduler.step_failed()
                for request, _ in work:
                    self.scheduler.drop(request)
                    request.fail(exc)
                raise
            self.scheduler.computed(work)
            self.steps += 1
            self._choose(logits, owners)
            return True

    def _choose(self, logits: torch.Tensor, owners: list[tuple[Request, list[tuple[int, int]]]]) -> None:
        """Every request picks its rows' next tokens; the greedy ones without processors share one argmax."""
        plain = [i for request, picks in owners if request.run.argmax_only for _, i in picks]
        if len(plain) == logits.shape[0]:
            best = dict(enumerate(logits.argmax(dim=-1).tolist()))
        else:
            best = dict(zip(plain, logits[plain].argmax(dim=-1).tolist())) if plain else {}
        for request, picks in owners:
            if request.run.argmax_only:  # a dead row's zero scores would pick id 0
                ids = [0] * len(request.rows)
                for r, i in picks:
                    ids[r] = best[i]
                next_ids = request.run.accept(torch.tensor(ids, device=logits.device))
            else:
                next_ids = request.run.choose(self._scores(request, logits, picks))
            self._advance(request, [r for r, _ in picks], next_ids.tolist())

    @staticmethod
    def _scores(request: Request, logits: torch.Tensor, picks: list[tuple[int, int]]) -> torch.Tensor:
        """The request's rows of the logits (a copy: processors may edit it); dead rows get zero scores, which
        only keep the generator's draws aligned with a solo run."""
        if len(picks) == len(request.rows) == 1:
            return logits[[picks[0][1]]]
        scores = logits.new_zeros(len(request.rows), logits.shape[1])
        scores[[r for r, _ in picks]] = logits[[i for _, i in picks]]
        return scores

    def _advance(self, request: Request, rows: list[int], next_ids: list[int]) -> None:
        """Append the picked tokens; finished rows and requests leave."""
        unfinished = request.run.unfinished.tolist()
        for r in rows:
            row = request.rows[r]
            row.tokens.append(next_ids[r])
            if not unfinished[r]:
                row.alive = False
                self.scheduler.release_row(row)
        request.push_text()
        if request.run.finished:
            self.scheduler.drop(request)
            request.finish()

    # ---- background thread ------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if not self._background or (self._thread is not None and self._thread.is_alive()):
            return
        with self._wake:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="taskhub-engine", daemon=True)
                self._thread.start()

    def _has_work(self) -> bool:
        s = self.scheduler
        return bool(self._incoming or self._cancelled or s.waiting or s.running)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._has_work():
                    self._wake.wait()
                if self._closed:
                    return
            try:
                self.step()
            except Exception:  # the failing step's requests got the error; others go on
                continue

    def close(self) -> None:
        """Stop the background thread; requests still queued or running fail."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._step_lock:
            for request in [*self.scheduler.running, *self.scheduler.waiting, *self._incoming]:
                self.scheduler.drop(request)
                request.fail(RequestCancelled("The engine was closed."))
            self._incoming = []

    # ---- statistics -------------------------------------------------------------------
    def stats(self) -> EngineStats:
        s = self.scheduler
        used = sum(pool.used for pool in s.pools)
        return EngineStats(
            running=len(s.running),
            waiting=len(s.waiting) + len(self._incoming),
            blocks_used=used,
            blocks_free=sum(pool.available for pool in s.pools),
            block_size=self.store.block_size,
            cache_bytes=self.cache_bytes,
            peak_cache_bytes=sum(peak * b for peak, b in zip(s.peak_used, self.group_bytes)),
            prefix_hit_rate=s.hit_tokens / s.prompt_tokens if s.prompt_tokens else 0.0,
            preemptions=s.preemptions,
            steps=self.steps,
        )
