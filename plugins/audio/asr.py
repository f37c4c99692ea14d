"""automatic-speech-recognition stages: chunk the audio, recognize each chunk (CTC or Whisper), stitch the text.

Long audio is split into chunks of `chunk_length_s` that overlap by `stride_length_s` on each
side (HF's scheme). CTC drops the logits of the overlaps, as HF's pipeline does. Whisper
decodes every chunk and merges the token sequences by their longest overlap (HF's rule for
sequence-to-sequence models); audio longer than Whisper's window (30 s) with no
`chunk_length_s` is cut into back-to-back windows with no overlap.

Timestamps: `return_timestamps="word"` or `"char"` (CTC) come from the CTC offsets;
`True` / `"chunk"` gives one entry per audio chunk with the seconds only that chunk covers
(for Whisper these come from the chunking, not from Whisper's timestamp tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import Any

import numpy as np

from taskhub import StageContext
from taskhub.errors import ParamError

from . import ctc, whisper
from .chunking import Span, chunk_sizes, split
from .features import Features, extract
from .loading import AudioModel
from .params import ChunkParams, OutputParams

CHUNKS_PER_FORWARD = 16  # chunks of one batch that run through the model together


@dataclass
class SpeechInput:
    """One audio input as the chunks the model runs on."""

    chunks: list[tuple[Span, Features]]
    chunked: bool  # split by chunk_length_s (CTC then drops the stride frames)
    n_samples: int

    def __len__(self) -> int:
        return self.n_samples

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def chunk_audio(items: list[np.ndarray], params: ChunkParams, ctx: StageContext) -> list[SpeechInput]:
    """Stage: waveform -> the model inputs of each chunk."""
    audio_model: AudioModel = ctx.model
    extractor = audio_model.feature_extractor
    rate = audio_model.sampling_rate
    window = getattr(extractor, "n_samples", None) if audio_model.kind == "whisper" else None
    out = []
    for audio in items:
        if params.chunk_length_s is not None:
            sizes = chunk_sizes(rate, params.chunk_length_s, params.stride_length_s, audio_model.samples_per_frame)
        elif window is not None and len(audio) > window:
            sizes = (window, 0, 0)
        else:
            out.append(SpeechInput([(Span(0, len(audio), 0, 0), extract(extractor, audio))], False, len(audio)))
            continue
        chunks = [(span, extract(extractor, piece)) for span, piece in split(audio, *sizes)]
        out.append(SpeechInput(chunks, params.chunk_length_s is not None, len(audio)))
    return out


@dataclass
class ChunkTokens:
    """What the model recognized in one chunk."""

    span: Span
    ids: list[int]  # CTC: frame labels (strides dropped); Whisper: generated tokens


def recognize(items: list[SpeechInput], params: whisper.WhisperParams, ctx: StageContext) -> list[list[ChunkTokens]]:
    """Model stage: every chunk of the batch through the model, CHUNKS_PER_FORWARD at a time."""
    audio_model: AudioModel = ctx.model
    if audio_model.kind == "ctc" and params.model_fields_set:
        names = ", ".join(sorted(params.model_fields_set))
        raise ParamError(f"{names}: decoding parameters apply to Whisper models; this model is CTC (greedy per frame).")
    flat = [(owner, span, features) for owner, item in enumerate(items) for span, features in item.chunks]
    ids: list[list[int]] = []
    for start in range(0, len(flat), CHUNKS_PER_FORWARD):
        part = flat[start : start + CHUNKS_PER_FORWARD]
        if audio_model.kind == "whisper":
            ids += whisper.transcribe(audio_model, [f for _, _, f in part], params, ctx.device)
        else:
            trim = [items[owner].chunked for owner, _, _ in part]
            ids += ctc.frame_ids(audio_model, [(s, f) for _, s, f in part], trim, ctx.device)
    out: list[list[ChunkTokens]] = [[] for _ in items]
    for (owner, span, _), chunk_ids in zip(flat, ids):
        out[owner].append(ChunkTokens(span, chunk_ids))
    return out


def to_text(items: list[list[ChunkTokens]], params: OutputParams, ctx: StageContext) -> list[dict[str, Any]]:
    """Postprocess: {"text"} plus "chunks" [{"text", "timestamp": (start, end)}] when timestamps are asked."""
    audio_model: AudioModel = ctx.model
    level = params.return_timestamps
    if audio_model.kind == "whisper" and level in ("word", "char"):
        raise ParamError(f'return_timestamps="{level}" needs a CTC model; Whisper gives True / "chunk" timestamps.')
    return [_stitch(audio_model, chunks, level) for chunks in items]


def _stitch(audio_model: AudioModel, chunks: list[ChunkTokens], level: bool | str) -> dict[str, Any]:
    tokenizer = audio_model.tokenizer
    pieces = [c.ids for c in chunks]
    if audio_model.kind == "whisper":
        if any(c.span.left or c.span.right for c in chunks):
            pieces = whisper.merge_overlapping(pieces, set(tokenizer.all_special_ids))
        decode = partial(tokenizer.decode, skip_special_tokens=True)
    else:
        decode = partial(ctc.decode, tokenizer)
    ids = list(chain.from_iterable(pieces))
    result: dict[str, Any] = {"text": decode(ids)}
    if level in ("word", "char"):
        result["chunks"] = ctc.offsets(audio_model, ids, str(level))
    elif level:
        rate = audio_model.sampling_rate
        result["chunks"] = [{"text": decode(p), "timestamp": c.span.kept_seconds(rate)} for p, c in zip(pieces, chunks)]
    return result
