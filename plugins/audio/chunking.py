"""Long audio: split into overlapping chunks (chunk_length_s, stride_length_s) the way HF's ASR pipeline does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from taskhub.errors import ParamError


@dataclass(frozen=True)
class Span:
    """One chunk of a waveform and the parts of it that overlap its neighbours."""

    start: int  # first sample of the chunk in the whole audio
    length: int  # samples in the chunk
    left: int  # leading samples shared with the previous chunk (0 for the first)
    right: int  # trailing samples shared with the next chunk (0 for the last)

    def kept_seconds(self, rate: int) -> tuple[float, float]:
        """The part only this chunk covers, in seconds of the whole audio."""
        return (self.start + self.left) / rate, (self.start + self.length - self.right) / rate


def chunk_sizes(
    rate: int, chunk_length_s: float, stride_length_s: float | tuple[float, float] | None, align_to: int
) -> tuple[int, int, int]:
    """(chunk, left stride, right stride) in samples, rounded to whole model frames like HF.

    The stride defaults to chunk_length_s / 6 on each side.
    """
    if stride_length_s is None:
        stride_length_s = chunk_length_s / 6
    if isinstance(stride_length_s, (int, float)):
        stride_length_s = (stride_length_s, stride_length_s)
    left_s, right_s = stride_length_s
    chunk, left, right = (int(round(s * rate / align_to) * align_to) for s in (chunk_length_s, left_s, right_s))
    if chunk <= left + right:
        raise ParamError(
            f"chunk_length_s={chunk_length_s} must be longer than the strides on both sides ({left_s} + {right_s} s)."
        )
    return chunk, left, right


def split(audio: np.ndarray, chunk: int, left: int, right: int) -> Iterator[tuple[Span, np.ndarray]]:
    """Chunks of `chunk` samples, each starting `chunk - left - right` after the previous one.

    As in HF's `chunk_iter`, a final piece no longer than the left stride is dropped: the
    previous chunk already covers it.
    """
    step = chunk - left - right
    total = len(audio)
    for start in range(0, total, step):
        piece = audio[start : start + chunk]
        is_last = start + chunk >= total
        span = Span(start, len(piece), 0 if start == 0 else left, 0 if is_last else right)
        if len(piece) > span.left:
            yield span, piece
        if is_last:
            break
