"""Model loader of the multimodal plugin: an image-text-to-text model with its processor, image processor and tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from taskhub.models import ModelSource

Kind = Literal["encoder-decoder", "blip", "decoder-only"]


@dataclass
class MultimodalModel:
    """What multimodal stages find in ctx.model."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: BaseImageProcessor
    processor: ProcessorMixin | None  # the joint processor (BLIP, Llava, ...): image tokens, chat template

    @property
    def kind(self) -> Kind:
        """How the image reaches the text decoder: encoder outputs, BLIP cross-attention, or prompt tokens."""
        if self.model.config.is_encoder_decoder:
            return "encoder-decoder"
        if self.model.config.model_type == "blip":
            return "blip"
        return "decoder-only"

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype


def load_multimodal_model(source: ModelSource) -> MultimodalModel:
    """Any AutoModelForImageTextToText checkpoint (VisionEncoderDecoder, BLIP, Llava, SmolVLM, ...).

    Image processors use the PIL backend (no torchvision needed). A checkpoint without a joint
    processor (VisionEncoderDecoder) gets its image processor and tokenizer separately.
    """
    remote = source.trust_remote_code
    processor: Any = AutoProcessor.from_pretrained(source.path, backend="pil", trust_remote_code=remote)
    if isinstance(processor, ProcessorMixin):
        image_processor, tokenizer = processor.image_processor, processor.tokenizer
    else:
        processor = None
        image_processor = AutoImageProcessor.from_pretrained(source.path, backend="pil", trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=remote)
    model = AutoModelForImageTextToText.from_pretrained(source.path, **source.from_pretrained_kwargs())
    model = model.to(source.device).eval()
    return MultimodalModel(model, tokenizer, image_processor, processor)
