"""Local executor: read lazily, one pipeline, batch by batch; Ctrl-C stops after the current batch."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any

from .progress import Progress
from .readers import Item
from .records import RunOutcome, WorkSpec, build_pipeline, chunks, run_batch, write_batches
from .writers import BatchWriter


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
    """Run every item of `todo` through one pipeline, `spec.batch_size` at a time, writing each batch."""
    pipe = build_pipeline(spec)
    with GracefulStop() as stop:
        batches = (run_batch(pipe, spec, batch) for batch in chunks(todo, spec.batch_size))
        return write_batches(batches, writer, progress, spec.on_error, stop)
