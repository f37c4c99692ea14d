"""Stages and helpers shared by the audio tasks: read audio, run the feature extractor, batch forwards."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from taskhub import StageContext

from .audio_io import load_audio


def load(items: list[Any], params: BaseModel, ctx: StageContext) -> list[np.ndarray]:
    """Every input as mono float32 at the model's sampling rate (len() = samples, for batching)."""
    rate = ctx.model.sampling_rate
    return [load_audio(item, index, rate) for index, item in enumerate(items)]


@dataclass
class Features:
    """Model inputs of one item as the feature extractor made them, batch dimension 1."""

    tensors: dict[str, torch.Tensor]  # input_values [1, n] or input_features [1, mels, frames]
    n_samples: int  # audio length, which the core sorts batches by

    def __len__(self) -> int:
        return self.n_samples

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def extract(feature_extractor: Any, audio: np.ndarray) -> Features:
    """The model's own feature extractor on one waveform, as the HF pipelines call it."""
    out = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
    tensors = {k: v for k, v in out.items() if k != "attention_mask"}  # all ones for one unpadded item
    return Features(tensors, len(audio))


def extract_features(items: list[np.ndarray], params: BaseModel, ctx: StageContext) -> list[Features]:
    """Stage: waveform -> model inputs."""
    return [extract(ctx.model.feature_extractor, audio) for audio in items]


def forward_by_shape(model: Any, items: list[Features], device: str) -> list[torch.Tensor]:
    """Per item, the model's logits without the batch dimension, in input order.

    Items whose inputs have the same shape run as one batch; no padding is ever added, so
    each result equals an unbatched forward (many audio models, e.g. Wav2Vec2-base, have
    no attention mask and change their output when padded).
    """
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[tuple((k, tuple(v.shape)) for k, v in sorted(item.tensors.items()))].append(index)
    results: list[torch.Tensor] = [torch.empty(0)] * len(items)
    for members in groups.values():
        batch = {
            key: torch.cat([items[i].tensors[key] for i in members]).to(device, _dtype_for(model, value))
            for key, value in items[members[0]].tensors.items()
        }
        logits = model(**batch).logits
        for row, index in enumerate(members):
            results[index] = logits[row]
    return results


def _dtype_for(model: Any, tensor: torch.Tensor) -> torch.dtype:
    """Float inputs follow the model's dtype (bf16 / fp16 runs); integer inputs keep theirs."""
    return model.dtype if tensor.is_floating_point() else tensor.dtype
