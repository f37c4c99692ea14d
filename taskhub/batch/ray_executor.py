"""Ray executor: Ray Data `map_batches` over actors that build the pipeline once each; the driver writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

from ..api import to_json
from ..errors import TaskhubError
from .local import GracefulStop
from .progress import Progress
from .readers import Item
from .records import RunOutcome, WorkSpec, build_pipeline, run_batch, write_batches
from .writers import BatchWriter


class PipelineActor:
    """One Ray actor: builds the job's pipeline once, then turns item batches into records."""

    def __init__(self, spec: WorkSpec) -> None:
        self.spec = spec
        self.pipe = build_pipeline(spec)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        items = [Item(**json.loads(row)) for row in batch["item"]]
        return {"record": [to_json(r) for r in run_batch(self.pipe, self.spec, items)]}


def _connect(ray: Any) -> bool:
    """Use an initialised Ray as is; else join RAY_ADDRESS, else start a local cluster. True if we started it."""
    if ray.is_initialized():
        return False
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
    return True


def run_ray(spec: WorkSpec, todo: Iterable[Item], writer: BatchWriter, progress: Progress, workers: int) -> RunOutcome:
    """Run `todo` on `workers` actors; records stream back to this process, which writes them.

    The items to run (ids and inputs, not file contents) are handed to Ray Data up front, so
    the driver holds them all; the local executor is the one whose memory stays flat.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise TaskhubError('the ray executor needs Ray Data: pip install "taskhub[ray]"') from None
    rows = [{"item": json.dumps(asdict(item), ensure_ascii=False)} for item in todo]
    if not rows:
        return RunOutcome()
    started = _connect(ray)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        records = ray.data.from_items(rows).map_batches(
            PipelineActor,
            fn_constructor_kwargs={"spec": spec},
            batch_size=spec.batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=1 if (spec.device or "").startswith("cuda") else 0,  # an actor sees a GPU only if it asks for one
            batch_format="numpy",
        )
        with GracefulStop() as stop:
            return write_batches(_decoded(records.iter_batches(batch_size=None)), writer, progress, spec.on_error, stop)
    finally:
        if started:
            ray.shutdown()


def _decoded(batches: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for batch in batches:
        yield [json.loads(row) for row in batch["record"]]
