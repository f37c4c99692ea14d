"""What keeps a job's output safe: one writer at a time (an OS file lock), an output that can be
written and is not an input, and a files glob that never reads the job's own output back."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import TaskhubError


class OutputConflictError(TaskhubError):
    """The output path holds something this job must not write to, or another run is writing it."""


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


class OutputLock:
    """An exclusive `fcntl.flock` on `<output>.lock`, which holds the owner's PID.

    The OS drops a flock when its process ends, however it ends (SIGKILL included), so a lock
    file left behind never blocks a rerun; a clean release also removes the file. Before using
    a lock it took, a run checks the file is still the one at the path (a run releasing its
    lock may have removed it in between).
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise OutputConflictError naming the PID that holds it."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if not _try_lock(fd, fcntl.LOCK_EX):
                owner = _read_pid(fd)
                os.close(fd)
                raise self._held(owner)
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def check_free(self) -> None:
        """Raise OutputConflictError if another run holds the lock; takes nothing, creates nothing (dry runs)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not _try_lock(fd, fcntl.LOCK_SH):
                raise self._held(_read_pid(fd))
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _held(self, owner: str) -> OutputConflictError:
        return OutputConflictError(
            f"{self.output} is already being written by PID {owner} (lock file {self.path}); "
            "wait for that run to end, or choose another output"
        )


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "(unknown)"


def check_output_location(output: Path) -> None:
    """Before any model loads: the output's folder exists (or can be made) and is writable."""
    folder = output.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputConflictError(f"cannot write {output}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputConflictError(f"cannot write {output}: the folder {folder} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise OutputConflictError(f"cannot write {output}: it exists and is not writable")


def check_not_input(output: Path, location: Path, kind: str) -> None:
    """The output (or its lock) must not be the input, hold it, or, for a folder source, lie inside it.

    A files glob may cover the output's folder: its own files are skipped (`own_files`) instead.
    """
    out = Path(os.path.realpath(output))
    source = Path(os.path.realpath(location))
    if kind != "files" and (source in (out, lock_path(out)) or source.is_relative_to(out)):
        raise OutputConflictError(f"output {output} is the job's input {location}; write the output elsewhere")
    if kind != "files" and source.is_dir() and out.is_relative_to(source):
        raise OutputConflictError(f"output {output} is inside the job's input folder {location}; write it elsewhere")


def own_files(output: Path) -> Callable[[str], bool]:
    """Whether a path is the job's output, its lock, a `.bak` of it, or inside one of those folders."""
    out = Path(os.path.realpath(output))
    name = out.name

    def is_own(path: str) -> bool:
        real = Path(os.path.realpath(path))
        for candidate in (real, *real.parents):
            if candidate.parent == out.parent:
                n = candidate.name
                return n in (name, f"{name}.lock") or (n.startswith(f"{name}.") and n.endswith(".bak"))
        return False

    return is_own
