"""Blocking model work driven from the event loop: worker threads, per-request deadlines, cancel on disconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from .errors import APIError
from .generation import Choice, Delta, Submission

T = TypeVar("T")
END = object()  # a delta stream's last item


class ClientGone(Exception):
    """The client closed the connection; the request's work has been cancelled."""


@dataclass
class Failed:
    error: BaseException


def deadline_error(timeout_s: float) -> APIError:
    return APIError(504, f"The request did not finish within the server's {timeout_s:g} s timeout.", code="timeout")


async def wait_disconnect(request: Request) -> None:
    """Returns when the client has gone away (the request body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Deadline:
    """The time a request must be done by (arrival + the server's timeout)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.started = time.perf_counter()
        self.at = self.started + timeout_s

    def left(self) -> float:
        return max(self.at - time.perf_counter(), 0.0)


async def guarded(request: Request, work: Awaitable[T], deadline: Deadline) -> T:
    """`work`, unless the client leaves first (ClientGone) or the deadline passes (504); it is cancelled then."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=deadline.left(), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    if watcher in done:
        raise ClientGone()
    raise deadline_error(deadline.timeout_s)


class DeltaStream:
    """A Submission's deltas, decoded in a worker thread and handed to the event loop as they come."""

    def __init__(self, submission: Submission, executor: ThreadPoolExecutor) -> None:
        self.submission = submission
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.first_at: float | None = None
        self.loop.run_in_executor(executor, self._produce)

    def _put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server has stopped
            self.submission.cancel()

    def _produce(self) -> None:
        try:
            for item in self.submission.deltas():
                self._put(item)
            self._put(END)
        except BaseException as exc:  # handed to the request, which turns it into an error response
            self._put(Failed(exc))

    async def next(self) -> Delta | Choice | None:
        """The next text Delta or finished Choice, or None at the end; re-raises the worker's error."""
        item = await self.queue.get()
        if item is END:
            return None
        if isinstance(item, Failed):
            raise item.error
        if self.first_at is None:
            self.first_at = time.perf_counter()
        return item

    def cancel(self) -> None:
        self.submission.cancel()


class Runner:
    """The bounded worker pool every model call runs on (one thread per running request)."""

    def __init__(self, threads: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="taskhub-serve")
        self.live: set[DeltaStream] = set()

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    def start(self, submission: Submission) -> DeltaStream:
        stream = DeltaStream(submission, self.executor)
        self.live.add(stream)
        return stream

    def finish(self, stream: DeltaStream) -> None:
        """Stop `stream`'s work if it is still going, and forget it."""
        stream.cancel()
        self.live.discard(stream)

    def shutdown(self) -> None:
        """Server stopping: cancel what still decodes, drop queued work, do not wait for threads."""
        for stream in list(self.live):
            self.finish(stream)
        self.executor.shutdown(wait=False, cancel_futures=True)
