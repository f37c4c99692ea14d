"""LogitsBackends for image-conditioned text decoders, built on textgen's HFBackend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from taskhub_textgen.backend import LogitsBackend, PromptBatch
from taskhub_textgen.hf_backend import HFBackend

from .loading import MultimodalModel

Condition = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class ImageConditionedBackend(HFBackend):
    """A decoder-only model whose forward also takes image inputs (`batch.encoder_inputs`).

    `condition` turns the batch's image tensors into forward kwargs once, at prefill: the
    flattened pixel values of a VLM (which the model reads only on the first forward, as in
    generate()), or BLIP's image embeddings that its text decoder cross-attends to every step.
    """

    def __init__(self, model: Any, condition: Condition) -> None:
        super().__init__(model)
        self.condition = condition
        self._extra: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def prefill(self, batch: PromptBatch, max_new_tokens: int) -> torch.Tensor:
        self._extra = self.condition(batch.encoder_inputs)
        return super().prefill(PromptBatch(batch.input_ids, batch.attention_mask), max_new_tokens)

    def _forward(self, input_ids: torch.Tensor, first: bool) -> torch.Tensor:
        if first:
            self._kwargs.update(self._extra)
        return super()._forward(input_ids, first)


def flatten_prompts(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """[B, *item] per-prompt processor outputs -> [B * item[0], ...]: every prompt's tensors concatenated.

    Prompts are stacked on a new dim 0 so that beam search and num_return_sequences repeat whole
    prompts (all of a prompt's images together); the model wants them concatenated in prompt order.
    """
    return {key: value.flatten(0, 1) for key, value in inputs.items()}


def blip_condition(model: Any) -> Condition:
    """BLIP: the vision model's last hidden state is what the text decoder cross-attends to."""

    def condition(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image_embeds = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state  # [B, P, D]
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)  # [B, P]
        return {"encoder_hidden_states": image_embeds, "encoder_attention_mask": mask}

    return condition


def backend_for(mm: MultimodalModel) -> LogitsBackend:
    """The backend that feeds `mm`'s image inputs the way its own generate() does."""
    if mm.kind == "encoder-decoder":
        return HFBackend(mm.model)
    if mm.kind == "blip":
        return ImageConditionedBackend(mm.model.text_decoder, blip_condition(mm.model))
    return ImageConditionedBackend(mm.model, flatten_prompts)
