"""Model loader of the vision plugin: a PIL-backend image processor plus a transformers model with the task's head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor
from transformers.models.auto import modeling_auto

from taskhub.cpu_kernels import linear_options
from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource

from .vit_encoder import ViTEncoder

HEADS = {
    "base": "AutoModel",
    "image-classification": "AutoModelForImageClassification",
    "object-detection": "AutoModelForObjectDetection",
    "depth-estimation": "AutoModelForDepthEstimation",
    "zero-shot-image-classification": "AutoModelForZeroShotImageClassification",
    "segmentation": None,  # picked per checkpoint from SEGMENTATION_MAPPINGS
}
# Segmentation heads in the order HF's image-segmentation pipeline prefers them (panoptic, instance, semantic).
SEGMENTATION_MAPPINGS = (
    modeling_auto.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES,
    modeling_auto.MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES,
    modeling_auto.MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES,
    modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
)


@dataclass
class VisionModel:
    """What vision stages find in ctx.model."""

    processor: BaseImageProcessor
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None = None  # text side of CLIP-style models
    encoder: torch.nn.Module | None = None  # fused stand-in for `model` with the same call and outputs

    @property
    def runner(self) -> torch.nn.Module:
        """What runs the batches: the fused encoder where there is one, else the transformers model."""
        return self.encoder if self.encoder is not None else self.model

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device


def load_vision_model(source: ModelSource) -> VisionModel:
    """Image processor (PIL backend: needs no torchvision) + model; `options.head` picks the head.

    A float32 / bfloat16 ViT on CPU also gets the fused `ViTEncoder` unless `options.fused_encoder` is
    false; `options.kernel` forces its linear kernel and `options.quantize: int8` runs it in dynamic int8.
    """
    head = source.options.get("head", "base")
    if head not in HEADS:
        raise ModelNotAvailableError(f"Unknown vision model head {head!r}; expected one of {', '.join(HEADS)}")
    processor = AutoImageProcessor.from_pretrained(
        source.path, backend="pil", **source.from_pretrained_kwargs(weights=False)
    )
    auto_class: Any = getattr(transformers, HEADS[head] or _segmentation_class(source))
    model = auto_class.from_pretrained(source.path, **source.from_pretrained_kwargs()).to(source.device).eval()
    tokenizer = None
    if head == "zero-shot-image-classification":
        tokenizer = AutoTokenizer.from_pretrained(source.path, **source.from_pretrained_kwargs(weights=False))
    fused = source.options.get("fused_encoder", True) and ViTEncoder.supports(model)
    options = linear_options(source, fused)
    encoder = ViTEncoder(model, options.kernel, options.quantize, options.precision).eval() if fused else None
    return VisionModel(processor, model, tokenizer, encoder=encoder)


def _segmentation_class(source: ModelSource) -> str:
    """The segmentation class the checkpoint was saved with, else the first that fits its model type."""
    config = AutoConfig.from_pretrained(source.path, **source.from_pretrained_kwargs(weights=False))
    saved = set(getattr(config, "architectures", None) or [])
    for mapping in SEGMENTATION_MAPPINGS:
        name = mapping.get(config.model_type)
        if name in saved:
            return name
    for mapping in SEGMENTATION_MAPPINGS:
        if config.model_type in mapping:
            return mapping[config.model_type]
    raise ModelNotAvailableError(f"Model type {config.model_type!r} has no image segmentation head in transformers.")
