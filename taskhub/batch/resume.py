"""Resume: which ids an output already holds (dropping a torn last line), and moving an old output aside."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .guard import OutputConflictError

ID_PREFIX = b'{"id": '  # every record is written with its id first ...
METRICS_TAIL = b', "metrics": {'  # ... and its metrics last
MAX_RECORD_BYTES = 1 << 30  # a longer line is not one of ours; refusing it keeps memory bounded
_decoder = json.JSONDecoder()


def record_key(item_id: object) -> str:
    """str(id), the key duplicate checks and resume compare; an unpaired surrogate (which no UTF-8
    file can hold) is spelled as its backslash escape, so every writer can store the key."""
    key = str(item_id)
    if key.isascii():
        return key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    return key


def read_jsonl_ids(path: Path, repair: bool = True) -> set[str]:
    """Keys of the records in a JSONL output; any other content refuses the file.

    Records are appended a batch at a time, so the only damage a crash (even SIGKILL) can
    leave is a last line without its newline that begins like a record. That line is not
    counted, and with `repair` the file is truncated to its last complete line so appending
    goes on cleanly. A line that is not a record (a user's notes, someone else's JSON Lines)
    raises OutputConflictError: the file is not this job's output and is left untouched.
    """
    if not path.exists():
        return set()
    ids: set[str] = set()
    complete = 0
    torn = False
    with open(path, "rb") as f:
        number = 0
        while line := f.readline(MAX_RECORD_BYTES):
            number += 1
            if not line.endswith(b"\n"):
                if len(line) < MAX_RECORD_BYTES and (line.startswith(ID_PREFIX) or ID_PREFIX.startswith(line)):
                    torn = True
                    break
                raise _not_ours(path, number, "a last line that is neither a record nor a record cut short")
            complete += len(line)
            ids.add(record_key(_record_id(line, path, number)))
    if torn and repair:
        os.truncate(path, complete)
    return ids


def _record_id(line: bytes, path: Path, number: int) -> object:
    """The id of one record line (only the id is decoded); OutputConflictError if it is no record."""
    if not (line.startswith(ID_PREFIX) and line.endswith(b"}\n") and line.rfind(METRICS_TAIL, -512) > 0):
        raise _not_ours(path, number, "not an output record")
    try:
        return _decoder.raw_decode(line[len(ID_PREFIX) :].decode("utf-8"))[0]
    except (ValueError, UnicodeDecodeError) as exc:
        raise _not_ours(path, number, f"not an output record ({exc})") from None


def _not_ours(path: Path, number: int, what: str) -> OutputConflictError:
    return OutputConflictError(
        f"{path}:{number}: {what}; the output exists and is not a taskhub record file, so it is left "
        "untouched: choose another output, or move the file away (--no-resume renames it to a .bak)"
    )


def move_aside(path: Path) -> Path | None:
    """Rename an old output (file or folder) to `<name>.<timestamp>.bak`; None when there is none."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{stamp}-{n}.bak")
    os.replace(path, target)
    return target
