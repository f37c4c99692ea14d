"""Batch input readers (a glob of files, JSON Lines, CSV) that yield Items lazily, and input loading."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..errors import BadInputError
from ..input_kinds import InputKind
from ..manifest import JobInputs
from .file_glob import glob_root, walk_glob
from .resume import record_key


@dataclass(frozen=True)
class Item:
    """One input of a job before it is read: enough to identify it, and to load it later."""

    id: str | int  # unique within the job; `key` is what duplicate checks and resume compare
    ref: str  # the output record's "input": the file path, or the id for records
    value: Any = None  # a file path (when is_path) or the record's input value (JSON-ready)
    is_path: bool = False  # value names a file, read according to the task's input kind
    problem: str | None = None  # why the item cannot be used: it fails with this message
    position: int | None = None  # index in the job's inputs, set by the job: errors say "Input <position>"

    @property
    def key(self) -> str:
        return record_key(self.id)


class BatchReader(Protocol):
    """What `register_batch_readers` registers.

    Called with the source's location (resolved against the manifest's folder) and the job's
    `inputs:`; returns a fresh lazy iterator of Items each call (a job reads its source twice:
    once to count and check ids, once to run). A source that cannot be read at all raises
    BadInputError naming the file and line; an item that cannot be used carries a `problem`.
    """

    def __call__(self, location: Path, inputs: JobInputs) -> Iterator[Item]: ...


def read_files(location: Path, inputs: JobInputs) -> Iterator[Item]:
    """One item per file matching the glob (``**`` recurses), in sorted order, never leaving the
    glob's root through a symlink unless `inputs.follow_symlinks` (see file_glob).

    The id is the path relative to the glob's root folder; the record's input is the full path.
    A file larger than `inputs.max_file_bytes`, or one that is not a regular file, fails alone.
    """
    root = glob_root(str(location))
    for match in walk_glob(location, inputs.follow_symlinks):
        path, problem = match.path, match.problem
        if problem is None:
            try:
                size = path.stat().st_size
            except OSError as exc:  # removed or made unreadable since the folder was listed
                size, problem = 0, f"{path}: cannot be read ({exc.strerror or exc})"
            if size > inputs.max_file_bytes:
                problem = f"{path} is {size} bytes, over inputs.max_file_bytes ({inputs.max_file_bytes})"
        yield Item(path.relative_to(root).as_posix(), str(path), str(path), is_path=True, problem=problem)


def open_regular(location: Path, what: str) -> BinaryIO:
    """Open a jsonl/csv source for reading, refusing what is not a regular file (a FIFO would block)."""
    try:
        mode = os.stat(location).st_mode
    except OSError as exc:
        raise BadInputError(f"cannot read {location}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise BadInputError(f"{location} is {kind}; expected a {what} file")
    return open(location, "rb")


def capped_lines(f: BinaryIO, location: Path, limit: int) -> Iterator[bytes]:
    """The lines of `f`, each read with at most `limit` bytes in memory; a longer line stops the job."""
    number = 0
    while line := f.readline(limit + 1):
        number += 1
        if len(line) > limit and not (len(line) == limit + 1 and line.endswith(b"\n")):
            raise BadInputError(
                f"{location}:{number}: line longer than inputs.max_line_bytes ({limit} bytes); "
                "raise max_line_bytes in the job's inputs if such lines are meant"
            )
        yield line


def read_jsonl(location: Path, inputs: JobInputs) -> Iterator[Item]:
    """One item per non-blank line; the id is `id_field` or the line number (from 1)."""
    with open_regular(location, "JSON Lines") as f:
        for number, raw in enumerate(capped_lines(f, location, inputs.max_line_bytes), 1):
            where = f"{location}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInputError(f"{where}: not UTF-8 ({exc.reason}); expected UTF-8 JSON Lines") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:  # also an int over 4300 digits, nesting too deep
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise BadInputError(f"{where}: not valid JSON ({reason}); expected one JSON object per line") from None
            yield _record_item(record, number, inputs, where)


def read_csv(location: Path, inputs: JobInputs) -> Iterator[Item]:
    """One item per row after the header; the id is `id_field` or the row number (from 1)."""
    with open_regular(location, "CSV") as f:
        lines = (line.decode("utf-8") for line in capped_lines(f, location, inputs.max_line_bytes))
        rows = csv.DictReader(lines)
        try:
            header = rows.fieldnames or []
            for name in (inputs.field, inputs.id_field):
                if name and name not in header:
                    raise BadInputError(f"{location}: no column {name!r}; the columns are {', '.join(header)}")
            for number, row in enumerate(rows, 1):
                yield _record_item(row, number, inputs, f"{location}: row {number}")
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{location}: not UTF-8 ({exc.reason}); expected a UTF-8 CSV file") from None
        except csv.Error as exc:  # e.g. a field over the csv module's 131072-character limit
            raise BadInputError(f"{location}: not a readable CSV file ({exc})") from None


def _record_item(record: Any, number: int, inputs: JobInputs, where: str) -> Item:
    """An Item from one jsonl/csv record: an unidentifiable record stops the job, a missing input field fails the item."""
    if not isinstance(record, dict):
        raise BadInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    item_id: Any = number
    if inputs.id_field:
        if inputs.id_field not in record:
            raise BadInputError(f"{where}: no id field {inputs.id_field!r}")
        item_id = record[inputs.id_field]
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            raise BadInputError(f"{where}: id field {inputs.id_field!r} is {item_id!r}; expected a string or integer")
    if inputs.field is None:
        return Item(item_id, str(item_id), record)
    if inputs.field not in record:
        fields = ", ".join(map(str, record)) or "none"
        return Item(item_id, str(item_id), problem=f"{where}: no field {inputs.field!r} (fields: {fields})")
    return Item(item_id, str(item_id), record[inputs.field])


def load_input(item: Item, kind: InputKind, base: Path, max_file_bytes: int) -> Any:
    """The task input of `item`: a file read with `kind.from_bytes` (the same reading as a CLI INPUT
    file), or the record's value.

    A `by_path` kind (image, audio) gets file paths unread; a relative path in a record resolves
    against `base`, the manifest's folder.
    """
    if item.problem:
        raise BadInputError(item.problem)
    if not item.is_path:
        if kind.by_path and isinstance(item.value, str) and "://" not in item.value:
            return str(base / item.value)
        return item.value
    path = Path(item.value)
    if kind.by_path:
        return str(path)
    with open_regular(path, f"{kind.name} input") as f:
        data = f.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise BadInputError(f"{path} is over inputs.max_file_bytes ({max_file_bytes} bytes)")
    return kind.from_bytes(data, str(path))
