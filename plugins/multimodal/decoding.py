"""Decoding of image-conditioned prompts through textgen: left-padded prompts with their image inputs, generate()."""

from __future__ import annotations

from collections.abc import Hashable

import torch
from taskhub_textgen.api import Generation, GenerationConfig, PromptBatch, generate

from .backends import backend_for
from .loading import MultimodalModel


def generate_for_prompts(
    mm: MultimodalModel, prompts: list[list[int]], image_inputs: dict[str, torch.Tensor], config: GenerationConfig
) -> list[list[Generation]]:
    """Decode each prompt (decoder ids) with its image inputs ([B, ...] per-prompt tensors)."""
    pad = config.pad_token_id if config.pad_token_id is not None else (config.finish_ids or [0])[0]
    inputs = {
        key: value.to(mm.device, mm.dtype) if value.is_floating_point() else value.to(mm.device)
        for key, value in image_inputs.items()
    }
    batch = PromptBatch.left_padded(prompts, pad, mm.device, inputs)
    return generate(backend_for(mm), batch, config, mm.tokenizer)


def group_by(keys: list[Hashable]) -> list[list[int]]:
    """Indices of equal keys, groups in first-seen order: items whose tensors stack into one batch."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())
