"""Streams of a request that generates several sequences (stream=True with num_return_sequences > 1)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Protocol, overload

from .generation import Generation


class SequenceSource(Protocol):
    """What decodes a prompt's n sequences together: an engine RequestHandle, or a RowGroup of a static batch."""

    def indexed(self) -> Iterator[tuple[int, str | Generation]]: ...
    @property
    def generations(self) -> list[Generation] | None: ...
    def result(self) -> list[Generation]: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...


class SequenceStreams(Sequence["SequenceStream"]):
    """The n sequences of one prompt, decoded together (one engine request, or rows of a static batch),
    each streamed token by token.

    `streams[i]` iterates sequence i's text deltas (each final when given; joined they equal its
    non-streamed text). `events()` gives every sequence's deltas as (index, delta) pairs in the
    order they are decoded and, as soon as a sequence has finished, (index, its Generation): what
    a server forwarding them as they come wants. Reading one sequence queues the others' items
    until they are read. `cancel()` stops all n sequences and frees their KV blocks (a static batch
    just stops being advanced); `result()` gives every Generation once all have finished.
    """

    def __init__(self, handle: SequenceSource, n: int) -> None:
        self.handle = handle
        self._queues: list[deque[str | Generation]] = [deque() for _ in range(n)]
        self._streams = [SequenceStream(self, i) for i in range(n)]
        self._finished: dict[int, Generation] = {}
        self._events: Iterator[tuple[int, str | Generation]] | None = None

    def __len__(self) -> int:
        return len(self._streams)

    @overload
    def __getitem__(self, index: int) -> SequenceStream: ...
    @overload
    def __getitem__(self, index: slice) -> list[SequenceStream]: ...
    def __getitem__(self, index: int | slice) -> SequenceStream | list[SequenceStream]:
        return self._streams[index]

    def events(self) -> Iterator[tuple[int, str | Generation]]:
        """(sequence index, text delta), and (sequence index, Generation) after a sequence's last delta,
        for everything not yet read through `streams[i]`, as decoded. One iterator per request: closing
        it unfinished (or dropping it) cancels the request, as with a RequestHandle."""
        if self._events is None:
            self._events = self._read_events()
        return self._events

    def _read_events(self) -> Iterator[tuple[int, str | Generation]]:
        try:
            for index, queue in enumerate(self._queues):
                while queue:
                    yield index, self._seen(index, queue.popleft())
            for index, item in self.handle.indexed():
                yield index, self._seen(index, item)
        finally:
            self.handle.close()

    def _seen(self, index: int, item: str | Generation) -> str | Generation:
        if isinstance(item, Generation):
            self._finished[index] = item
        return item

    def _pull(self) -> bool:
        """Queue the next item of any sequence; False once the request ended."""
        for index, item in self.handle.indexed():
            self._queues[index].append(self._seen(index, item))
            return True
        return False

    def finished(self, index: int) -> Generation | None:
        """Sequence `index`'s Generation once it has been read (or the whole request has finished)."""
        if index in self._finished:
            return self._finished[index]
        done = self.handle.generations
        return done[index] if done else None

    def result(self) -> list[Generation]:
        """Every sequence's Generation; blocks until the request finished (RequestCancelled if it was cancelled)."""
        return self.handle.result()

    def cancel(self) -> None:
        """Stop every sequence and free their KV blocks (at the engine's next step)."""
        self.handle.cancel()


class SequenceStream:
    """Text deltas of one sequence of a SequenceStreams; its Generation once it has finished."""

    def __init__(self, shared: SequenceStreams, index: int) -> None:
        self._shared, self.index = shared, index
        self._ended = False

    def __iter__(self) -> SequenceStream:
        return self

    def __next__(self) -> str:
        queue = self._shared._queues[self.index]
        while not self._ended:
            if not queue and not self._shared._pull():
                self._ended = True
            elif queue:
                item = queue.popleft()
                if isinstance(item, str):
                    return item
                self._ended = True  # the sequence's Generation: its last item
        raise StopIteration

    @property
    def generation(self) -> Generation | None:
        """The finished sequence (finish_reason, metrics, ...); None while it is still being decoded."""
        return self._shared.finished(self.index)
