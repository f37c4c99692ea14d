"""image-to-text stages: images (+ an optional prompt) -> decoder prompts, captions through textgen, HF-shaped output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from taskhub_textgen.api import Generation, GenerationConfig, cut_at_stop, finish_text, with_model_defaults
from taskhub_vision.api import DirectPath, map_in_threads, run_processor

from taskhub import StageContext
from taskhub.errors import ParamError
from taskhub.registry import NoParams

from .decoding import generate_for_prompts, group_by
from .loading import MultimodalModel
from .params import CaptionPromptParams


@dataclass
class CaptionInput:
    """One image ready for the decoder."""

    pixel_values: torch.Tensor  # [C, H, W]
    prompt_ids: list[int]  # decoder prompt: the start token, then the prompt's tokens


def decoder_prompt(mm: MultimodalModel, prompt: str | None) -> list[int]:
    """What the model's generate() starts decoding from: BLIP's [DEC] bos, or the decoder start token."""
    if mm.kind == "decoder-only":
        raise ParamError(
            f"{type(mm.model).__name__} reads images as prompt tokens; use the image-text-to-text task for it."
        )
    if mm.kind == "blip":
        start = mm.model.config.text_config.bos_token_id
    else:
        start = mm.model.generation_config.decoder_start_token_id
        start = mm.model.config.decoder_start_token_id if start is None else start
    ids = mm.tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    return [start, *ids]


def caption_inputs(items: list[Image.Image], params: CaptionPromptParams, ctx: StageContext) -> list[CaptionInput]:
    """Stage `multimodal.caption_inputs`: pixel values (vision's exact fast path when it applies) and the prompt."""
    mm: MultimodalModel = ctx.model
    prompt = decoder_prompt(mm, params.prompt)
    direct = DirectPath.of(mm.image_processor)
    func: Any = direct if direct is not None else (lambda image: run_processor(mm.image_processor, image))
    return [CaptionInput(pixels.tensors["pixel_values"], prompt) for pixels in map_in_threads(func, items)]


def forced_ids(mm: MultimodalModel) -> dict[str, Any]:
    """Ids the model's own generate() passes regardless of its generation_config (BLIP ends at [SEP])."""
    if mm.kind == "blip":
        text = mm.model.config.text_config
        return {"eos_token_id": text.sep_token_id, "pad_token_id": text.pad_token_id}
    return {}


def caption_text(tokenizer: Any, prompt_ids: list[int], generation: Generation, config: GenerationConfig) -> str:
    """The caption as HF's image-to-text decodes it: the whole decoder sequence, so a prompt starts it."""
    prefix = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    if not prefix:
        return generation.text or ""
    no_stop = config.model_copy(update={"stop": []})
    full = finish_text(tokenizer, prompt_ids + generation.token_ids, generation.finish_reason, no_stop)
    if config.stop and full.startswith(prefix):
        full = prefix + cut_at_stop(full[len(prefix) :], config.stop, config.include_stop)[0]
    return full


def generate_captions(items: list[CaptionInput], params: GenerationConfig, ctx: StageContext) -> list[list[str]]:
    """Stage `multimodal.generate_caption`: per image its captions (num_return_sequences), best first."""
    mm: MultimodalModel = ctx.model
    out: list[list[str]] = [[] for _ in items]
    keys = [(tuple(item.pixel_values.shape), tuple(item.prompt_ids)) for item in items]
    for group in group_by(keys):
        chosen = [items[i] for i in group]
        config = with_model_defaults(params, mm.model.generation_config, len(chosen[0].prompt_ids), forced_ids(mm))
        pixels = torch.stack([item.pixel_values for item in chosen])  # [B, C, H, W]
        results = generate_for_prompts(mm, [item.prompt_ids for item in chosen], {"pixel_values": pixels}, config)
        for i, item, generations in zip(group, chosen, results):
            out[i] = [caption_text(mm.tokenizer, item.prompt_ids, g, config) for g in generations]
    return out


def caption_output(items: list[list[str]], params: NoParams, ctx: StageContext) -> list[list[dict[str, str]]]:
    """Stage `multimodal.caption_output`: [{"generated_text": ...}] per image, as HF's image-to-text returned."""
    return [[{"generated_text": text} for text in texts] for texts in items]
