"""Decoding of image-conditioned prompts through textgen: the request's config, left-padded prompts, generate()."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from pydantic import ValidationError
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.generate import Generation, generate

from taskhub.errors import ParamError

from .backends import backend_for
from .loading import MultimodalModel


def decoding_config(
    params: GenerationConfig, generation_config: Any, prompt_len: int, forced: dict[str, Any] | None = None
) -> GenerationConfig:
    """The caller's controls; where the caller set none, `forced` (what the model's generate() passes
    itself), then the checkpoint's generation_config (num_beams, eos_token_id, ...), as generate() does.

    A checkpoint's `max_length` counts the decoder prompt, so it becomes max_new_tokens = max_length - prompt.
    """
    values = params.model_dump()
    for name in GenerationConfig.model_fields:
        if name in params.model_fields_set:
            continue
        if forced and name in forced:
            values[name] = forced[name]
        elif getattr(generation_config, name, None) is not None:
            values[name] = getattr(generation_config, name)
    max_length = getattr(generation_config, "max_length", None)
    if "max_new_tokens" not in params.model_fields_set and generation_config.max_new_tokens is None and max_length:
        values["max_new_tokens"] = max(max_length - prompt_len, 0)
    try:
        return GenerationConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ParamError(f"Invalid generation settings (call params + the model's generation_config): {problems}") from None


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] input ids left-padded with `pad_id`, and the [B, T] attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def generate_for_prompts(
    mm: MultimodalModel, prompts: list[list[int]], image_inputs: dict[str, torch.Tensor], config: GenerationConfig
) -> list[list[Generation]]:
    """Decode each prompt (decoder ids) with its image inputs ([B, ...] per-prompt tensors)."""
    pad = config.pad_token_id if config.pad_token_id is not None else (config.finish_ids or [0])[0]
    ids, mask = left_pad(prompts, pad, mm.device)
    inputs = {
        key: value.to(mm.device, mm.dtype) if value.is_floating_point() else value.to(mm.device)
        for key, value in image_inputs.items()
    }
    return generate(backend_for(mm), PromptBatch(ids, mask, inputs), config, mm.tokenizer)


def group_by(keys: list[Hashable]) -> list[list[int]]:
    """Indices of equal keys, groups in first-seen order: items whose tensors stack into one batch."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())
