"""Turning a batch of Items into output records, and writing record batches: shared by every executor."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..api import to_json
from ..errors import BadInputError, StageError
from ..pipeline import Pipeline
from ..plugins import get_registry
from .progress import Progress
from .readers import Item, load_input
from .resume import record_key
from .writers import BatchWriter

T = TypeVar("T")


@dataclass(frozen=True)
class WorkSpec:
    """What an executor needs to build the pipeline and make records; plain data, so Ray can ship it."""

    task: str
    model: str | None  # None: the task's default model
    revision: str | None
    device: str | None
    dtype: str | None
    params: dict[str, Any]  # call params, validated against the task's stages before any work
    input_kind: str  # the task manifest's `input`: how a file item is read
    base: str  # the manifest's folder: relative paths in records resolve against it
    batch_size: int
    on_error: Literal["record", "stop"]
    max_file_bytes: int  # a files item larger than this fails alone
    trust_remote_code: bool = False
    allow_pickle: bool = False


def build_pipeline(spec: WorkSpec) -> Pipeline:
    """The job's one pipeline (its model loads here, once)."""
    return Pipeline(
        spec.task,
        spec.model,
        revision=spec.revision,
        device=spec.device,
        dtype=spec.dtype,
        trust_remote_code=spec.trust_remote_code,
        allow_pickle=spec.allow_pickle,
        batch_size=spec.batch_size,
        **spec.params,
    )


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), pulled lazily."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def _check_encodable(item: Item) -> None:
    """An id no UTF-8 file can hold (an unpaired surrogate, e.g. from a file name that is not UTF-8)
    fails its item; its record carries the id's escaped spelling, which resume matches."""
    if item.key != str(item.id):
        raise BadInputError(
            f"id {item.key} is not valid Unicode (it holds an unpaired surrogate) and cannot be written; "
            "ids must be UTF-8 text"
        )


def _storable(item_id: str | int) -> str | int:
    return item_id if isinstance(item_id, int) else record_key(item_id)


def _run(pipe: Pipeline, values: list[Any], positions: list[int]) -> list[Any]:
    """The pipeline's results for `values`; an error names an input by its position in the job."""
    pipe.check_inputs(values, positions)
    return pipe.run_items(values, positions=positions)


def run_batch(pipe: Pipeline, spec: WorkSpec, items: list[Item]) -> list[dict[str, Any]]:
    """One record per item, in order. If the batch raises, its items rerun one by one so only
    the bad ones fail; each failure is recorded as {"type", "message"}."""
    start = time.perf_counter()
    places = [i if item.position is None else item.position for i, item in enumerate(items)]
    inputs: dict[int, Any] = {}
    errors: dict[int, dict[str, str]] = {}
    seconds: dict[int, float] = {}
    kind = get_registry().input_kinds.get(spec.input_kind)
    for i, item in enumerate(items):
        try:
            _check_encodable(item)
            inputs[i] = load_input(item, kind, Path(spec.base), spec.max_file_bytes)
        except Exception as exc:  # unreadable file, missing field: this item fails, the batch goes on
            errors[i] = _error(exc)
    outputs: dict[int, Any] = {}
    if inputs:
        try:
            outputs = dict(zip(inputs, _run(pipe, list(inputs.values()), [places[i] for i in inputs])))
        except Exception:
            for i, value in inputs.items():
                alone = time.perf_counter()
                try:
                    outputs[i] = _run(pipe, [value], [places[i]])[0]
                except Exception as exc:
                    errors[i] = _error(exc)
                seconds[i] = time.perf_counter() - alone
    for i in list(outputs):
        try:
            to_json(outputs[i])  # what the writer will do: a result JSON cannot hold fails its item alone
        except StageError as exc:
            errors[i] = _error(StageError(f"Input {places[i]}: {exc}"))
            del outputs[i]
    elapsed = time.perf_counter() - start
    return [
        {
            "id": _storable(item.id),
            "input": record_key(item.ref),
            "output": outputs.get(i),
            "error": errors.get(i),
            "metrics": {
                "seconds": round(seconds.get(i, elapsed / len(items)), 6),
                "batch_seconds": round(elapsed, 6),
                "batch_items": len(items),
            },
        }
        for i, item in enumerate(items)
    ]


@dataclass
class RunOutcome:
    """What an executor did: records written, and why it stopped early (if it did)."""

    done: int = 0  # successful records written
    failed: int = 0  # error records written, or the items that stopped the job (not written)
    written: int = 0  # records written, successful or not
    stopped: Literal["interrupted", "error"] | None = None
    first_error: dict[str, Any] | None = None  # {"id", "type", "message"}


class WriteBehind:
    """Hands record batches to `writer` on one thread, so a batch is encoded, written and fsynced
    while the next one computes. At most one batch is in flight; `write` and `close` wait for it
    and re-raise its error, so nothing is lost on a clean stop and memory stays flat."""

    def __init__(self, writer: BatchWriter) -> None:
        self.writer = writer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskhub-writer")
        self._pending: Future[None] | None = None

    def write(self, records: list[dict[str, Any]]) -> None:
        self.wait()
        self._pending = self._pool.submit(self.writer.write, records)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def write_batches(
    batches: Iterable[list[dict[str, Any]]],
    writer: BatchWriter,
    progress: Progress,
    on_error: str,
    stop_requested: Any,
) -> RunOutcome:
    """Write each record batch as it comes (write-behind: the next batch computes meanwhile).
    With on_error=stop, write what succeeded and stop at the first failure (its record is not
    written, so a rerun retries it). `stop_requested()` is checked after every batch (Ctrl-C);
    every batch handed over is written before this returns, even on KeyboardInterrupt."""
    outcome = RunOutcome()
    behind = WriteBehind(writer)
    try:
        for records in batches:
            bad = [r for r in records if r["error"] is not None]
            if bad and outcome.first_error is None:
                outcome.first_error = {"id": bad[0]["id"], **bad[0]["error"]}
            if bad and on_error == "stop":
                records = [r for r in records if r["error"] is None]
                outcome.stopped = "error"
            if records:
                behind.write(records)
            outcome.written += len(records)
            ok = sum(r["error"] is None for r in records)
            outcome.done += ok
            outcome.failed += len(bad)
            progress.update(ok, len(bad))
            if outcome.stopped:
                break
            if stop_requested():
                outcome.stopped = "interrupted"
                break
    finally:
        behind.close()
    return outcome
