"""Batch input readers (a glob of files, JSON Lines, CSV) that yield Items lazily, and input loading."""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadInputError
from ..manifest import JobInputs

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Item:
    """One input of a job before it is read: enough to identify it, and to load it later."""

    id: str | int  # unique within the job; str(id) is what duplicate checks and resume compare
    ref: str  # the output record's "input": the file path, or the id for records
    value: Any = None  # a file path (when is_path) or the record's input value (JSON-ready)
    is_path: bool = False  # value names a file, read according to the task's input kind
    problem: str | None = None  # why the item cannot be used: it fails with this message

    @property
    def key(self) -> str:
        return str(self.id)


class BatchReader(Protocol):
    """What `register_batch_readers` registers.

    Called with the source's location (resolved against the manifest's folder) and the job's
    `inputs:`; returns a fresh lazy iterator of Items each call (a job reads its source twice:
    once to count and check ids, once to run). A source that cannot be read at all raises
    BadInputError naming the file and line; an item that cannot be used carries a `problem`.
    """

    def __call__(self, location: Path, inputs: JobInputs) -> Iterator[Item]: ...


def glob_root(pattern: str) -> Path:
    """The folder a glob starts from: its leading parts without glob characters."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(c in part for c in GLOB_CHARS):
            break
        fixed.append(part)
    return Path(*fixed).parent if len(fixed) == len(parts) else Path(*fixed)


def read_files(location: Path, inputs: JobInputs) -> Iterator[Item]:
    """One item per file matching the glob (``**`` recurses), in file-system order.

    The id is the path relative to the glob's root folder; the record's input is the full path.
    """
    root = glob_root(str(location))
    for name in glob.iglob(str(location), recursive=True):
        path = Path(name)
        if path.is_file():
            yield Item(path.relative_to(root).as_posix(), str(path), str(path), is_path=True)


def read_jsonl(location: Path, inputs: JobInputs) -> Iterator[Item]:
    """One item per non-blank line; the id is `id_field` or the line number (from 1)."""
    with open(location, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{location}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInputError(f"{where}: not UTF-8 ({exc.reason}); expected UTF-8 JSON Lines") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{where}: not valid JSON ({exc.msg}); expected one JSON object per line") from None
            yield _record_item(record, number, inputs, where)


def read_csv(location: Path, inputs: JobInputs) -> Iterator[Item]:
    """One item per row after the header; the id is `id_field` or the row number (from 1)."""
    with open(location, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        try:
            header = rows.fieldnames or []
            for name in (inputs.field, inputs.id_field):
                if name and name not in header:
                    raise BadInputError(f"{location}: no column {name!r}; the columns are {', '.join(header)}")
            for number, row in enumerate(rows, 1):
                yield _record_item(row, number, inputs, f"{location}: row {number}")
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{location}: not UTF-8 ({exc.reason}); expected a UTF-8 CSV file") from None


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


def load_input(item: Item, kind: str, base: Path) -> Any:
    """The task input of `item`: a file read per the task's input kind, or the record's value.

    text/chat files are read as UTF-8 text, object files as JSON, image/audio files are passed
    as paths (relative paths in records resolve against `base`, the manifest's folder).
    """
    if item.problem:
        raise BadInputError(item.problem)
    if not item.is_path:
        if kind in ("image", "audio") and isinstance(item.value, str) and "://" not in item.value:
            return str(base / item.value)
        return item.value
    path = Path(item.value)
    if kind in ("image", "audio"):
        return str(path)
    data = path.read_bytes()
    if kind == "object":
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(
                f"{path}: not a JSON file ({exc}); an object task reads one JSON object per file"
            ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); a {kind} task reads each file as UTF-8 text"
        ) from None
