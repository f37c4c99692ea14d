"""Batch output writers: JSON Lines (durable after every batch) and Parquet part files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO, Any, Protocol

from ..api import to_json
from ..errors import TaskhubError
from .guard import OutputConflictError
from .resume import move_aside, read_jsonl_ids

PART_NAME = re.compile(r"^(part-\d{5}\.parquet|\.part-\d{5}\.tmp)$")


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of JSON text; an unpaired surrogate (unencodable) is written as its JSON escape."""
    return text.encode("utf-8", "backslashreplace")


def _text(text: str) -> str:
    return _utf8(text).decode("utf-8")


class BatchWriter(Protocol):
    """What `register_batch_writers` registers (a class, constructed with the output path).

    `write` must leave the records durable, or at worst lose whole records that a resumed
    run then redoes: a record that `completed_ids` reports is never written again. `write`
    runs on a writer thread (one call at a time), overlapping the next batch's compute.
    """

    def __init__(self, path: Path) -> None: ...

    def completed_ids(self, repair: bool) -> set[str]:
        """str(id) of every record already in the output; `repair` drops what a crash left torn."""

    def move_aside(self) -> Path | None:
        """Move an existing output out of the way (for --no-resume); where it went."""

    def write(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """One JSON record per line, appended per batch with flush + fsync; resume drops a torn last line."""

    def __init__(self, path: Path) -> None:
        if path.exists() and not path.is_file():
            raise OutputConflictError(f"output {path} exists and is not a regular file; a .jsonl output is one file")
        self.path = path
        self._file: IO[bytes] | None = None

    def completed_ids(self, repair: bool) -> set[str]:
        return read_jsonl_ids(self.path, repair)

    def move_aside(self) -> Path | None:
        return move_aside(self.path)

    def write(self, records: list[dict[str, Any]]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        self._file.write(_utf8("".join(to_json(r) + "\n" for r in records)))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ParquetWriter:
    """`NAME.parquet` is a folder of `part-NNNNN.parquet` files, each written whole.

    Records are buffered and written `rows_per_part` at a time (and at the end) to a temporary
    file that is fsynced and renamed into place, so a part is either complete or absent. A crash
    loses at most the buffered records, which a resumed run redoes. Columns: id (str), input
    (str), and output, error, metrics as JSON text (error is null on success).
    """

    rows_per_part = 1000

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise TaskhubError(f"writing {path.name} needs pyarrow: pip install pyarrow (or write .jsonl)") from None
        if path.exists() and not path.is_dir():
            raise OutputConflictError(
                f"output {path} is a file; a .parquet output is a folder of part files: choose another name"
            )
        foreign = [p.name for p in path.iterdir() if not PART_NAME.match(p.name)] if path.is_dir() else []
        if foreign:
            raise OutputConflictError(
                f"output folder {path} holds files that are not part files ({', '.join(sorted(foreign)[:5])}); "
                "it is left untouched: choose another output"
            )
        self.path = path
        self._rows: list[dict[str, Any]] = []

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def completed_ids(self, repair: bool) -> set[str]:
        import pyarrow.parquet as pq

        if repair and self.path.is_dir():
            for tmp in self.path.glob(".part-*.tmp"):
                tmp.unlink()
        ids: set[str] = set()
        for part in self._parts():
            try:
                ids.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
            except (OSError, KeyError, ValueError) as exc:
                raise OutputConflictError(
                    f"{part}: not a taskhub part file ({exc}); the output is left untouched"
                ) from None
        return ids

    def move_aside(self) -> Path | None:
        return move_aside(self.path)

    def write(self, records: list[dict[str, Any]]) -> None:
        self._rows.extend(
            {
                "id": _text(str(r["id"])),
                "input": _text(r["input"]),
                "output": _text(to_json(r["output"])),
                "error": None if r["error"] is None else _text(json.dumps(r["error"], ensure_ascii=False)),
                "metrics": json.dumps(r["metrics"]),
            }
            for r in records
        )
        if len(self._rows) >= self.rows_per_part:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        parts = self._parts()
        index = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        tmp = self.path / f".part-{index:05d}.tmp"
        schema = pa.schema([(name, pa.string()) for name in ("id", "input", "output", "error", "metrics")])
        pq.write_table(pa.Table.from_pylist(self._rows, schema=schema), tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path / f"part-{index:05d}.parquet")
        self._rows = []

    def close(self) -> None:
        self._flush()
