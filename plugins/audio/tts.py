"""text-to-speech stages (VITS / MMS-TTS) and `write_wav`, which saves a result as an audio file."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from pydantic import BaseModel

from taskhub import StageContext
from taskhub.errors import BadInputError

from .params import SpeechParams


def tokenize(items: list[str], params: BaseModel, ctx: StageContext) -> list[list[int]]:
    """Preprocess: text -> the model's input ids (VitsTokenizer normalises and may insert blanks)."""
    out = []
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise BadInputError(f"Input {index} is a {type(text).__name__}; expected a string to speak.")
        ids = ctx.model.tokenizer(text)["input_ids"]
        if not text.strip() or not ids:
            raise BadInputError(f"Input {index} has nothing to speak ({text[:40]!r}); expected non-empty text.")
        out.append(ids)
    return out


def _seeded(seed: int | None, device: str) -> Any:
    """torch's RNG seeded for one input, restored afterwards; nothing when seed is None."""
    if seed is None:
        return nullcontext()
    where = torch.device(device)
    devices = [where.index or 0] if where.type == "cuda" else []
    return torch.random.fork_rng(devices=devices, device_type="cuda")


def synthesize(items: list[list[int]], params: SpeechParams, ctx: StageContext) -> list[dict[str, Any]]:
    """Model stage: one forward per input (no padding, so each input's audio is its own),
    {"audio": list of float samples, "sampling_rate": int}."""
    model = ctx.model.model
    out = []
    for ids in items:
        input_ids = torch.tensor([ids], device=ctx.device)  # [1, T]
        with _seeded(params.seed, ctx.device):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            waveform = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).waveform[0]  # [samples]
        out.append({"audio": waveform.float().cpu().tolist(), "sampling_rate": ctx.model.sampling_rate})
    return out


def write_wav(result: dict[str, Any], path: str | Path) -> Path:
    """Save a text-to-speech result ({"audio", "sampling_rate"}); the suffix picks the format (.wav, .flac, .ogg)."""
    path = Path(path)
    samples = np.asarray(result["audio"], dtype=np.float32)
    sf.write(path, samples, int(result["sampling_rate"]))
    return path
