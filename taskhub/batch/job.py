"""run_job: check a job manifest, work out what is left to do, run it locally or on Ray, summarise."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, ManifestError, ParamError, TaskhubError, UnknownTaskError
from ..manifest import JobManifest, _node_at, load_job_manifest, read_yaml
from ..models import check_device_name, check_dtype_name
from ..pipeline import TaskPlan
from ..plugins import get_registry
from .guard import OutputLock, check_not_input, check_output_location, own_files
from .local import run_local
from .progress import Progress, summary_line
from .readers import BatchReader, Item
from .records import RunOutcome, WorkSpec
from .writers import BatchWriter


@dataclass
class _Source:
    """Where a job manifest came from: error locations and the folder relative paths resolve against."""

    name: str
    base: Path
    path: Path | None = None

    def where(self, *loc: str) -> str:
        """`file:line` of a field (as deep as it exists), for error messages."""
        if self.path is None:
            return self.name
        node = _node_at(read_yaml(self.path)[1], loc)
        return f"{self.name}:{node.start_mark.line + 1}" if node is not None else self.name

    def resolve(self, location: str) -> Path:
        """A manifest path: relative ones start at the manifest's folder (`..` is folded, links are kept)."""
        return Path(os.path.normpath(self.base / os.path.expanduser(location)))

    def model(self, model: str | None) -> str | None:
        """`model:` as a directory relative to the manifest's folder when it names one there (or
        starts with ./ or ../), else as given (a hub id, or absolute)."""
        if model is None or Path(model).expanduser().is_absolute():
            return model
        local = self.resolve(model)
        return str(local) if local.is_dir() or model.startswith(("./", "../")) else model

    def error(self, loc: tuple[str, ...], message: str) -> ManifestError:
        return ManifestError(f"{self.where(*loc)}: {'.'.join(loc)}: {message}")


@dataclass
class _Plan:
    """A checked job: how to make records, where inputs come from and where records go."""

    job: JobManifest
    spec: WorkSpec
    reader: BatchReader
    location: Path
    writer: BatchWriter
    output: Path


def _load(path_or_manifest: str | os.PathLike[str] | JobManifest) -> tuple[JobManifest, _Source]:
    if isinstance(path_or_manifest, JobManifest):
        return path_or_manifest, _Source(f"job {path_or_manifest.job!r}", Path.cwd())
    path = Path(path_or_manifest)
    return load_job_manifest(path), _Source(str(path), path.resolve().parent, path)


def _plan(job: JobManifest, src: _Source) -> _Plan:
    """Everything that can be checked without loading a model: task, params, inputs, output."""
    registry = get_registry()
    try:
        entry, _ = registry.task(job.task)
    except UnknownTaskError as exc:
        raise src.error(("task",), str(exc)) from None
    if "batch_size" in job.params:
        raise src.error(("params", "batch_size"), "set the job's batch_size field instead")
    try:
        TaskPlan(job.task, job.params)
    except ParamError as exc:
        raise src.error(("params",), str(exc)) from None
    try:
        check_dtype_name(job.dtype)
    except ParamError as exc:
        raise src.error(("dtype",), str(exc)) from None
    try:
        check_device_name(job.device)
    except ParamError as exc:
        raise src.error(("device",), str(exc)) from None
    kind = entry.manifest.input
    if job.inputs.kind in ("jsonl", "csv") and job.inputs.field is None and kind != "object":
        raise src.error(
            ("inputs", "field"), f"required: task {job.task!r} takes {kind} inputs; name the field holding them"
        )
    try:
        reader = registry.readers.get(job.inputs.kind)
    except TaskhubError as exc:
        raise src.error(("inputs",), str(exc)) from None
    output = src.resolve(job.output)
    location = src.resolve(job.inputs.location)
    try:
        check_output_location(output)
        check_not_input(output, location, job.inputs.kind)
        writer = registry.writers.get(output.suffix)(output)
    except TaskhubError as exc:
        raise src.error(("output",), str(exc)) from None
    spec = WorkSpec(
        task=job.task,
        model=src.model(job.model),
        revision=job.revision,
        device=job.device,
        dtype=job.dtype,
        params=dict(job.params),
        input_kind=kind,
        base=str(src.base),
        batch_size=job.batch_size,
        on_error=job.on_error,
        max_file_bytes=job.inputs.max_file_bytes,
        trust_remote_code=job.trust_remote_code,
        allow_pickle=job.allow_pickle,
    )
    return _Plan(job, spec, reader, location, writer, output)


def _items(plan: _Plan) -> Iterator[Item]:
    """The source's items, less the job's own output, lock and .bak files (a glob may cover them)."""
    is_own = own_files(plan.output)
    for item in plan.reader(plan.location, plan.job.inputs):
        if not (item.is_path and isinstance(item.value, str) and is_own(item.value)):
            yield item


def _scan(plan: _Plan, src: _Source, done: set[str]) -> tuple[int, int]:
    """(items, items already done) in one streaming pass; duplicate ids are an error.

    Only a 64-bit hash per id is kept (8 bytes, 16 while sorting); a repeated hash is
    confirmed, or found to be a mere collision, by a second pass over those ids alone.
    """
    hashes = array("q")
    skipped = 0
    try:
        for item in _items(plan):
            hashes.append(hash(item.key))
            skipped += item.key in done
        ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
        repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
        if repeated:
            _check_duplicates(plan, repeated)
    except OSError as exc:
        raise src.error(
            ("inputs", plan.job.inputs.kind), f"cannot read {plan.location}: {exc.strerror or exc}"
        ) from None
    if not hashes and plan.job.inputs.kind == "files":
        raise src.error(("inputs", "files"), f"{plan.location} matches no files")
    return len(hashes), skipped


def _check_duplicates(plan: _Plan, repeated: set[int]) -> None:
    positions: dict[str, list[int]] = {}
    for n, item in enumerate(_items(plan), 1):
        if hash(item.key) in repeated:
            positions.setdefault(item.key, []).append(n)
    dups = {key: at for key, at in positions.items() if len(at) > 1}
    if dups:
        shown = "; ".join(f"{key!r} at items {', '.join(map(str, at[:5]))}" for key, at in list(dups.items())[:5])
        more = f" (and {len(dups) - 5} more)" if len(dups) > 5 else ""
        raise BadInputError(
            f"{plan.location}: {len(dups)} duplicate ids: {shown}{more}. Ids must be unique: "
            "set inputs.id_field to a field with unique values, or leave it out to use line numbers"
        )


def run_job(
    path_or_manifest: str | os.PathLike[str] | JobManifest,
    *,
    executor: str | None = None,
    workers: int | None = None,
    resume: bool = True,
    limit: int | None = None,
    dry_run: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run a batch job (a manifest path, or a JobManifest whose paths resolve against the working
    folder) and return its summary; progress goes to stderr unless `quiet`.

    Every input id already in the output is skipped (`resume=False` moves the old output aside
    first). `limit` caps how many items this run processes. `dry_run` checks the manifest
    (params included), counts inputs and what is left to do, and loads no model.
    """
    job, src = _load(path_or_manifest)
    executor = executor or job.executor
    workers = workers or job.workers
    if executor not in ("local", "ray"):
        raise ParamError(f"executor must be 'local' or 'ray', got {executor!r}")
    if workers < 1 or (limit is not None and limit < 0):
        raise ParamError(f"workers must be >= 1 and limit >= 0 (got workers={workers}, limit={limit})")
    plan = _plan(job, src)
    lock = OutputLock(plan.output)
    if dry_run:
        lock.check_free()
        return _dry_run(plan, src, executor, resume, limit, quiet)
    with lock:
        return _run(plan, src, executor, workers, resume, limit, quiet)


def _counts(
    plan: _Plan, src: _Source, executor: str, resume: bool, limit: int | None, repair: bool
) -> tuple[set[str], dict[str, Any], int]:
    """(ids already written, the summary's head, how many items this run does)."""
    done = plan.writer.completed_ids(repair=repair) if resume else set()
    total, skipped = _scan(plan, src, done)
    to_run = total - skipped if limit is None else min(limit, total - skipped)
    head = {
        "job": plan.job.job,
        "task": plan.job.task,
        "executor": executor,
        "output": str(plan.output),
        "total": total,
        "skipped": skipped,
    }
    return done, head, to_run


def _dry_run(plan: _Plan, src: _Source, executor: str, resume: bool, limit: int | None, quiet: bool) -> dict[str, Any]:
    _, head, to_run = _counts(plan, src, executor, resume, limit, repair=False)
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise TaskhubError('the ray executor needs Ray Data: pip install "taskhub[ray]"')
    log = Progress(to_run, label=plan.job.job, stream=None if quiet else sys.stderr)
    log.say(
        f"{plan.job.job}: manifest OK; {head['total']} inputs, {head['skipped']} already in the output, "
        f"{to_run} to run (dry run)"
    )
    return {**head, "dry_run": True, "to_run": to_run}


def _run(
    plan: _Plan, src: _Source, executor: str, workers: int, resume: bool, limit: int | None, quiet: bool
) -> dict[str, Any]:
    """The job itself, run while this process holds the output's lock."""
    job = plan.job
    done, head, to_run = _counts(plan, src, executor, resume, limit, repair=True)
    total, skipped = head["total"], head["skipped"]
    log = Progress(to_run, label=job.job, stream=None if quiet else sys.stderr)
    moved = None if resume else plan.writer.move_aside()
    if moved:
        log.say(f"{job.job}: moved the old output to {moved}")
    if executor == "local" and workers > 1:
        log.say(f"{job.job}: the local executor runs one pipeline; workers={workers} applies to --executor ray")
    log.say(f"{job.job}: {total} inputs, {skipped} already in {plan.output}, {to_run} to run ({executor})")
    todo = islice((replace(item, position=n) for n, item in enumerate(_items(plan)) if item.key not in done), to_run)
    start = time.monotonic()
    try:
        if executor == "ray":
            from .ray_executor import run_ray

            outcome: RunOutcome = run_ray(plan.spec, todo, plan.writer, log, workers)
        else:
            outcome = run_local(plan.spec, todo, plan.writer, log)
    finally:
        plan.writer.close()
        log.close()
    seconds = time.monotonic() - start
    summary = {
        **head,
        "workers": workers,
        "done": outcome.done,
        "failed": outcome.failed,
        "remaining": total - skipped - outcome.written,
        "stopped": outcome.stopped,
        "error": outcome.first_error,
        "seconds": round(seconds, 3),
        "items_per_second": round((outcome.done + outcome.failed) / seconds, 3) if seconds > 0 else 0.0,
        "moved_aside": str(moved) if moved else None,
    }
    log.say(summary_line(summary))
    if outcome.first_error and outcome.stopped == "error":
        log.say(
            f"{job.job}: item {outcome.first_error['id']!r} failed: {outcome.first_error['type']}: {outcome.first_error['message']}"
        )
    return summary
