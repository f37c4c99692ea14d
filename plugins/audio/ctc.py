"""CTC speech recognition: greedy frame labels, stride frames dropped at chunk edges, offsets to timestamps."""

from __future__ import annotations

from typing import Any

import torch

from .chunking import Span
from .features import Features, forward_by_shape
from .loading import AudioModel


def frame_ids(
    audio_model: AudioModel, chunks: list[tuple[Span, Features]], trim: list[bool], device: str
) -> list[list[int]]:
    """Argmax label per frame of every chunk; chunks cut by chunk_length_s (`trim`) lose their stride frames.

    The stride is rescaled from samples to frames exactly as HF's `rescale_stride` does, so
    stitched chunks give the same frames as its pipeline.
    """
    logits = forward_by_shape(audio_model.model, [features for _, features in chunks], device)
    ratio = audio_model.samples_per_frame
    out = []
    for (span, _), chunk_logits, cut in zip(chunks, logits, trim):
        ids: torch.Tensor = chunk_logits.argmax(dim=-1)  # [frames]
        if cut:
            frames = int(round(span.length / ratio))
            left = int(round(span.left / span.length * frames))
            right = int(round(span.right / span.length * frames))
            ids = ids[left : frames - right]
        out.append(ids.tolist())
    return out


def decode(tokenizer: Any, ids: list[int]) -> str:
    """CTC collapse (repeats merged, blanks dropped, word delimiter to space), as HF's pipeline decodes."""
    return tokenizer.decode(ids, skip_special_tokens=False)


def offsets(audio_model: AudioModel, ids: list[int], level: str) -> list[dict[str, Any]]:
    """`level` ("char" or "word") pieces of the transcript with (start, end) in seconds."""
    out = audio_model.tokenizer.decode(ids, skip_special_tokens=False, **{f"output_{level}_offsets": True})[
        f"{level}_offsets"
    ]
    ratio, rate = audio_model.samples_per_frame, audio_model.sampling_rate
    return [
        {"text": piece[level], "timestamp": (piece["start_offset"] * ratio / rate, piece["end_offset"] * ratio / rate)}
        for piece in out
    ]
