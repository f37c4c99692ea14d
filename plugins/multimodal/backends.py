"""textgen's HFBackend for image-conditioned text decoders: how each kind of model takes its image inputs."""

from __future__ import annotations

from typing import Any

import torch
from taskhub_textgen.api import ExtraInputs, HFBackend, LogitsBackend

from .loading import MultimodalModel


def flatten_prompts(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """[B, *item] per-prompt processor outputs -> [B * item[0], ...]: every prompt's tensors concatenated.

    Prompts are stacked on a new dim 0 so that beam search and num_return_sequences repeat whole
    prompts (all of a prompt's images together); the model wants them concatenated in prompt order.
    The model reads them on the first forward only, as in generate().
    """
    return {key: value.flatten(0, 1) for key, value in inputs.items()}


def blip_image_states(model: Any) -> ExtraInputs:
    """BLIP: the vision model's last hidden state is what the text decoder cross-attends to at every step."""

    def image_states(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image_embeds = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state  # [B, P, D]
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)  # [B, P]
        return {"encoder_hidden_states": image_embeds, "encoder_attention_mask": mask}

    return image_states


def backend_for(mm: MultimodalModel) -> LogitsBackend:
    """The backend that feeds `mm`'s image inputs the way its own generate() does."""
    if mm.kind == "encoder-decoder":
        return HFBackend(mm.model)
    if mm.kind == "blip":
        return HFBackend(mm.model.text_decoder, extra_inputs=blip_image_states(mm.model))
    return HFBackend(mm.model, extra_inputs=flatten_prompts)
