"""Resume: which ids an output already holds (dropping a torn last line), and moving an old output aside."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import TaskhubError

ID_PREFIX = b'{"id": '  # every record is written with its id first
_decoder = json.JSONDecoder()


def read_jsonl_ids(path: Path, repair: bool = True) -> set[str]:
    """Keys (str of id) of the records in a JSONL output.

    Records are appended a batch at a time, so the only damage a crash (even SIGKILL) can
    leave is a last line without its newline. That line is not counted, and with `repair`
    the file is truncated to its last complete line so appending goes on cleanly.
    """
    if not path.exists():
        return set()
    ids: set[str] = set()
    complete = 0
    torn = False
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                torn = True
                break
            complete += len(line)
            if line.strip():
                ids.add(str(_record_id(line, path, number)))
    if torn and repair:
        os.truncate(path, complete)
    return ids


def _record_id(line: bytes, path: Path, number: int) -> object:
    """The id of one record line; only the id is decoded when the line starts with it."""
    try:
        if line.startswith(ID_PREFIX):
            return _decoder.raw_decode(line[len(ID_PREFIX) :].decode("utf-8"))[0]
        return json.loads(line)["id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TaskhubError(
            f"{path}:{number}: not an output record ({type(exc).__name__}: {exc}); "
            "repair the file or start over with --no-resume (the old output is kept as a .bak)"
        ) from None


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
