"""Streams of a request that generates several sequences (stream=True with num_return_sequences > 1)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import overload

from .engine.request import RequestHandle
from .generation import Generation


class SequenceStreams(Sequence["SequenceStream"]):
    """The n sequences of one engine request, each streamed token by token.

    `streams[i]` iterates sequence i's text deltas (each final when given; joined they equal
    its non-streamed text); `deltas()` gives every sequence's deltas as (index, delta) pairs in
    the order they are decoded, which is what a server forwarding them as they come wants.
    Reading one sequence queues the others' deltas until they are read. `cancel()` stops all n
    sequences and frees their KV blocks; `result()` gives every Generation once they finished.
    """

    def __init__(self, handle: RequestHandle, n: int) -> None:
        self.handle = handle
        self._queues: list[deque[str]] = [deque() for _ in range(n)]
        self._streams = [SequenceStream(self, i) for i in range(n)]

    def __len__(self) -> int:
        return len(self._streams)

    @overload
    def __getitem__(self, index: int) -> SequenceStream: ...
    @overload
    def __getitem__(self, index: slice) -> list[SequenceStream]: ...
    def __getitem__(self, index: int | slice) -> SequenceStream | list[SequenceStream]:
        return self._streams[index]

    def deltas(self) -> Iterator[tuple[int, str]]:
        """(sequence index, text delta) of every sequence not yet read through `streams[i]`, as decoded."""
        for index, queue in enumerate(self._queues):
            while queue:
                yield index, queue.popleft()
        yield from self.handle.indexed()

    def _pull(self) -> bool:
        """Queue the next delta of any sequence; False once the request ended."""
        for index, text in self.handle.indexed():
            self._queues[index].append(text)
            return True
        return False

    def result(self) -> list[Generation]:
        """Every sequence's Generation; blocks until the request finished (RequestCancelled if it was cancelled)."""
        return self.handle.result()

    def cancel(self) -> None:
        """Stop every sequence and free their KV blocks (at the engine's next step)."""
        self.handle.cancel()


class SequenceStream:
    """Text deltas of one sequence of a SequenceStreams; its Generation once the request finished."""

    def __init__(self, shared: SequenceStreams, index: int) -> None:
        self._shared, self.index = shared, index

    def __iter__(self) -> SequenceStream:
        return self

    def __next__(self) -> str:
        queue = self._shared._queues[self.index]
        while not queue:
            if not self._shared._pull():
                raise StopIteration
        return queue.popleft()

    @property
    def generation(self) -> Generation | None:
        """The finished sequence (finish_reason, metrics, ...); None while the request runs."""
        results = self._shared.handle.generations
        return results[self.index] if results else None
