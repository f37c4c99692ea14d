"""Per-request state of the engine (tokens, decoding run, blocks) and the handle a caller holds."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from taskhub.errors import TaskhubError

from ..generate import SamplingRun
from ..generation import Generation


class RequestCancelled(TaskhubError):
    """The request was cancelled (handle.cancel(), an abandoned stream, or the engine closed)."""


@dataclass(eq=False)  # rows are compared by identity
class Row:
    """One sequence of a request: its tokens and where their keys/values live."""

    tokens: list[int]  # prompt + generated so far
    n_groups: int  # layer groups of the model (one per sliding-window size)
    computed: int = 0  # leading tokens whose keys/values are in the cache
    blocks: list[list[int]] = field(default_factory=list)  # per layer group: live block ids, in order
    first: list[int] = field(default_factory=list)  # per layer group: index of blocks[g][0] in the sequence
    hashes: list[bytes] = field(default_factory=list)  # prefix hash of every full block of `tokens` so far
    registered: int = 0  # leading full blocks already published to the prefix cache
    alive: bool = True  # still generating

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the cache (preemption); the caller has released the blocks."""
        self.computed = 0
        self.registered = 0
        self.blocks = [[] for _ in range(self.n_groups)]
        self.first = [0] * self.n_groups

    @property
    def pending(self) -> int:
        """Tokens not yet run through the model."""
        return len(self.tokens) - self.computed


class Request:
    """A submitted prompt: its rows (num_return_sequences), its decoding run, and how it ends."""

    def __init__(self, prompt: list[int], run: SamplingRun, n_groups: int, streaming: bool) -> None:
        self.rows = [Row(list(prompt), n_groups) for _ in range(run.config.num_return_sequences)]
        self.run = run
        self.prompt_len = len(prompt)
        self.submitted = time.perf_counter()
        self.admitted: float | None = None
        # per sequence: (index, text delta) as decoded, then (index, its finished Generation); None at the end
        self.deltas: queue.SimpleQueue[tuple[int, str | Generation] | None] | None = (
            queue.SimpleQueue() if streaming else None
        )
        self.ended: dict[int, Generation] = {}  # streamed rows whose Generation has been queued
        self.done = threading.Event()
        self.results: list[Generation] | None = None
        self.error: BaseException | None = None
        self.cancelled = False

    @property
    def live_rows(self) -> list[Row]:
        return [row for row in self.rows if row.alive]

    def push_text(self) -> None:
        """Queue the text each row's stream made final since the last step, and the Generation of each row
        that has just finished (its held text released first), while the other rows go on."""
        if self.deltas is None or self.run.streams is None:
            return
        for index, (row, stream) in enumerate(zip(self.rows, self.run.streams)):
            ended = not row.alive and index not in self.ended
            if ended:
                stream.finish()
            text = stream.take()
            if text:
                self.deltas.put((index, text))
            if ended:
                self.ended[index] = self._stamped(self.run.result(index))
                self.deltas.put((index, self.ended[index]))

    def finish(self) -> None:
        """Generation ended normally: results with queue time, the rest of the streamed text and sequences."""
        self.run.finish_streams()
        self.push_text()
        self.results = [
            self.ended[i] if i in self.ended else self._stamped(g) for i, g in enumerate(self.run.results())
        ]
        if self.deltas is not None:
            for index, generation in enumerate(self.results):
                if index not in self.ended:
                    self.deltas.put((index, generation))
        self._close()

    def _stamped(self, generation: Generation) -> Generation:
        generation.metrics["queue_s"] = (self.admitted or self.submitted) - self.submitted
        return generation

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._close()

    def _close(self) -> None:
        self.done.set()
        if self.deltas is not None:
            self.deltas.put(None)


class RequestHandle:
    """What engine.submit returns: a blocking result, text deltas (stream=True), cancel.

    Iterating gives the text deltas of a one-sequence request; `indexed()` gives, for every
    sequence (num_return_sequences > 1), (index, text delta) pairs in the order they are decoded
    and, as soon as that sequence has finished, (index, its Generation).

    Dropping a handle before its request finished cancels the request, so an abandoned
    stream frees its KV blocks.
    """

    def __init__(
        self, request: Request, cancel: Callable[[Request], None], step: Callable[[], None] | None = None
    ) -> None:
        self._request = request
        self._cancel = cancel
        self._step = step  # an engine without a background thread is driven by whoever waits
        self._deltas: Iterator[tuple[int, str | Generation]] | None = None

    @property
    def done(self) -> bool:
        return self._request.done.is_set()

    def result(self) -> list[Generation]:
        """The request's sequences (num_return_sequences of them); blocks until it finished."""
        request = self._request
        if self._step is None:
            request.done.wait()
        while not request.done.is_set():
            self._step()
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    @property
    def generations(self) -> list[Generation] | None:
        """Every finished sequence (num_return_sequences of them); None while running or after a failure."""
        return self._request.results

    @property
    def generation(self) -> Generation | None:
        """The finished first sequence (finish_reason, metrics, ...); None while running."""
        results = self._request.results
        return results[0] if results else None

    def __iter__(self) -> RequestHandle:
        return self

    def __next__(self) -> str:
        """The next text delta, final when given (submit with stream=True, one sequence)."""
        if len(self._request.rows) != 1:
            raise ValueError("a request of several sequences streams through indexed()")
        for _, item in self.indexed():
            if isinstance(item, str):
                return item
        raise StopIteration

    def indexed(self) -> Iterator[tuple[int, str | Generation]]:
        """(sequence index, text delta) of every sequence as decoded, each delta final when given, and
        (sequence index, Generation) once that sequence has finished (after its last delta)."""
        if self._deltas is None:
            self._deltas = self._read_deltas()
        return self._deltas

    def close(self) -> None:
        """Stop reading: cancels the request if it is still running."""
        if self._deltas is not None:
            self._deltas.close()
        self.cancel()

    def _read_deltas(self) -> Iterator[tuple[int, str | Generation]]:
        request = self._request
        deltas = request.deltas
        if deltas is None:
            raise ValueError("submit(..., stream=True) to iterate text deltas")
        try:
            while True:
                while self._step is not None and deltas.empty() and not request.done.is_set():
                    self._step()
                delta = deltas.get()
                if delta is None:
                    break
                yield delta
        finally:
            self.cancel()
        if request.error is not None:
            raise request.error

    def cancel(self) -> None:
        """Stop the request and free its blocks (at the next step boundary)."""
        if not self._request.done.is_set():
            self._cancel(self._request)

    def __del__(self) -> None:
        self.cancel()
