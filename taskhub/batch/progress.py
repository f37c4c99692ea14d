"""Job progress on stderr: a live bar on a terminal, plain periodic lines otherwise, and the summary line."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

BAR_WIDTH = 24


def duration(seconds: float) -> str:
    """`1:02:03`, `02:03`, or `?` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """Items done out of `total`, items/s, ETA and errors so far.

    On a TTY the line is redrawn at most every `refresh` seconds; elsewhere (logs, CI, pipes)
    one plain line is printed every `interval` seconds. `stream=None` prints nothing.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str = "",
        stream: TextIO | None = sys.stderr,
        interval: float = 10.0,
        refresh: float = 0.2,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.every = refresh if self.tty else interval
        self.done = 0
        self.failed = 0
        self.start = time.monotonic()
        self._last = self.start

    def update(self, done: int, failed: int) -> None:
        """Count `done` successful and `failed` failed items more."""
        self.done += done
        self.failed += failed
        now = time.monotonic()
        if now - self._last >= self.every or (self.tty and self.processed >= self.total):
            self._last = now
            self._show()

    @property
    def processed(self) -> int:
        return self.done + self.failed

    def _show(self) -> None:
        if self.stream is None:
            return
        elapsed = time.monotonic() - self.start
        rate = self.processed / elapsed if elapsed > 0 else 0.0
        eta = duration((self.total - self.processed) / rate) if rate > 0 else "?"
        share = self.processed / self.total if self.total else 1.0
        counts = f"{self.processed}/{self.total}"
        if self.tty:
            filled = int(share * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            line = f"\r{self.label} {share:4.0%} [{bar}] {counts} [{duration(elapsed)}<{eta}, {rate:.1f} items/s, errors {self.failed}]"
            self.stream.write(line)
        else:
            self.stream.write(
                f"{self.label}: {counts} ({share:.0%}), {rate:.1f} items/s, ETA {eta}, errors {self.failed}\n"
            )
        self.stream.flush()

    def close(self) -> None:
        """End the live line so later output starts on a fresh one."""
        if self.stream is not None and self.tty:
            self._show()
            self.stream.write("\n")
            self.stream.flush()

    def say(self, message: str) -> None:
        if self.stream is not None:
            self.stream.write(f"{message}\n")
            self.stream.flush()


def summary_line(summary: dict[str, Any]) -> str:
    """The one line a finished (or stopped) job prints."""
    head = f"{summary['job']}: done {summary['done']}, failed {summary['failed']}, skipped {summary['skipped']}"
    if summary["remaining"]:
        head += f", remaining {summary['remaining']}"
    tail = f" in {summary['seconds']:.1f}s ({summary['items_per_second']:.1f} items/s) -> {summary['output']}"
    stopped = {"interrupted": " [interrupted]", "error": " [stopped on error]"}.get(summary["stopped"] or "", "")
    return head + tail + stopped
