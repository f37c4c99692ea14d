"""Local executor: read lazily, one pipeline, batch by batch (a wide window of batches for continuous-batching
stages); Ctrl-C stops after the current batch."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import FrameType, TracebackType
from typing import Any

from .progress import Progress
from .readers import Item
from .records import RunOutcome, WorkSpec, build_pipeline, chunks, run_batch, write_batches
from .writers import BatchWriter

CONTINUOUS_WINDOW = 64  # items in flight at least, for a stage that batches across calls (an engine)


class GracefulStop:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM asks to stop after the current batch;
    a second SIGINT aborts at once. Outside the main thread signals are left alone."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after the current batch (Ctrl-C again to abort now)", file=sys.stderr, flush=True)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __call__(self) -> bool:
        return self.requested


def run_local(spec: WorkSpec, todo: Iterable[Item], writer: BatchWriter, progress: Progress) -> RunOutcome:
    """Run every item of `todo` through one pipeline, `spec.batch_size` at a time, writing each batch.

    When the task's model stage schedules items itself (`batching.continuous`: a continuous-batching
    engine), several batches run at once on threads, so the engine always has a wide window of
    requests to fill its steps with; each batch is written as soon as it completes."""
    pipe = build_pipeline(spec)
    with GracefulStop() as stop:
        if pipe.manifest.batching.continuous:
            in_flight = max(8, -(-CONTINUOUS_WINDOW // spec.batch_size))  # batches: >= 64 items and >= 8 batches
            batches: Iterator[list[dict[str, Any]]] = run_windowed(
                lambda batch: run_batch(pipe, spec, batch), chunks(todo, spec.batch_size), in_flight, stop
            )
        else:
            batches = (run_batch(pipe, spec, batch) for batch in chunks(todo, spec.batch_size))
        return write_batches(batches, writer, progress, spec.on_error, stop)


def run_windowed(
    run: Callable[[list[Item]], list[dict[str, Any]]],
    batches: Iterator[list[Item]],
    in_flight: int,
    stop_requested: Callable[[], bool],
) -> Iterator[list[dict[str, Any]]]:
    """Records of up to `in_flight` batches running at once, each batch's as soon as it completes (so in
    completion order; resume matches by id). Batches not started when the consumer stops are never run;
    running ones finish in the background and are not written (a rerun redoes them)."""
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="taskhub-window")
    pending: set[Future[list[dict[str, Any]]]] = set()
    try:
        while True:
            while len(pending) < in_flight and not stop_requested():
                batch = next(batches, None)
                if batch is None:
                    break
                pending.add(pool.submit(run, batch))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [record for future in done for record in future.result()]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
