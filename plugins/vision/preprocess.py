"""Stage `vision.preprocess`: RGB images -> the model's pixel tensors, on the decode pool.

Plain resize/crop/normalize processors (ViT, CLIP, DeiT, ...) take a direct path that gives the
same pixel_values as HF's PIL-backend processor with fewer copies: one PIL resize (HF converts
to numpy and back to PIL around it) and a per-channel lookup table built with the processor's
own rescale/normalize, so every float is computed by the same operations. Other processors
(DETR, SegFormer, DPT, ...) are called as they are, one image per call, concurrently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BaseImageProcessor

from taskhub import StageContext
from taskhub.errors import BadInputError
from taskhub.registry import NoParams

from .images import map_in_threads

# Methods a processor must inherit unchanged from PilBackend for the direct path to be exact.
DIRECT_PATH_METHODS = (
    "preprocess",
    "_standardize_kwargs",
    "_preprocess_image_like_inputs",
    "_prepare_image_like_inputs",
    "process_image",
    "_preprocess",
    "resize",
    "center_crop",
)


@dataclass
class PixelInputs:
    """One preprocessed image: processor outputs without the batch dim, and the original size."""

    tensors: dict[str, torch.Tensor]  # pixel_values [C, H, W], and e.g. pixel_mask [H, W]
    size: tuple[int, int]  # (height, width) of the input image, for boxes, masks and depth maps


@dataclass(frozen=True)
class DirectPath:
    """HF PIL-backend resize -> center crop -> rescale -> normalize, done straight on the PIL image."""

    fixed_size: tuple[int, int] | None  # resize to this (height, width) ...
    shortest_edge: int | None  # ... or resize the short side to this, keeping the aspect ratio
    resample: int
    crop: tuple[int, int] | None  # (height, width) of the center crop
    table: np.ndarray  # [3, 256]: value of channel c for uint8 input v, from the processor's own ops

    @classmethod
    def of(cls, processor: BaseImageProcessor) -> DirectPath | None:
        """The direct path for `processor`, or None when its preprocessing is anything else."""
        if not isinstance(processor, PilBackend) or getattr(processor, "do_pad", False):
            return None
        if any(getattr(type(processor), m) is not getattr(PilBackend, m) for m in DIRECT_PATH_METHODS):
            return None
        fixed, shortest = None, None
        if processor.do_resize:
            size = processor.size
            if size.shortest_edge and not size.longest_edge:
                shortest = int(size.shortest_edge)
            elif size.height and size.width and not (size.shortest_edge or size.max_height):
                fixed = (int(size.height), int(size.width))
            if (fixed is None and shortest is None) or not isinstance(processor.resample, int):
                return None
        crop = None
        if processor.do_center_crop:
            crop = (int(processor.crop_size.height), int(processor.crop_size.width))
        return cls(fixed, shortest, int(processor.resample or 0), crop, _value_table(processor))

    def __call__(self, image: Image.Image) -> PixelInputs:
        original = (image.height, image.width)
        if self.fixed_size or self.shortest_edge:
            height, width = self._target(image.height, image.width)
            image = image.resize((width, height), resample=self.resample)
        if self.crop is not None:
            crop_h, crop_w = self.crop
            top, left = (image.height - crop_h) // 2, (image.width - crop_w) // 2
            image = image.crop((left, top, left + crop_w, top + crop_h))  # zero-fills outside, as HF pads
        pixels = np.asarray(image).transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W] uint8
        values = self.table[np.arange(3)[:, None, None], pixels]  # [3, H, W]
        return PixelInputs({"pixel_values": torch.from_numpy(values)}, original)

    def _target(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing, computed as HF's get_resize_output_image_size does."""
        if self.fixed_size is not None:
            return self.fixed_size
        edge = int(self.shortest_edge or 0)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = edge, int(edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


def _value_table(processor: BaseImageProcessor) -> np.ndarray:
    """Run the processor's rescale and normalize on every uint8 value of every channel."""
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)).copy()  # a [3, 1, 256] image
    out: np.ndarray = values
    if processor.do_rescale:
        out = processor.rescale(out, processor.rescale_factor)
    if processor.do_normalize:
        out = processor.normalize(out, processor.image_mean, processor.image_std)
    return np.ascontiguousarray(out[:, 0, :])


def run_processor(processor: BaseImageProcessor, image: Image.Image) -> PixelInputs:
    """The processor itself on one image: what any other processor gets."""
    try:
        encoded = processor(images=[image], return_tensors="pt")
    except ValueError as exc:  # e.g. an image smaller than the model's size divisor
        raise BadInputError(f"A {image.width}x{image.height} image cannot be prepared for this model: {exc}") from None
    tensors = {k: v[0] for k, v in encoded.items() if isinstance(v, torch.Tensor)}
    return PixelInputs(tensors, (image.height, image.width))


def preprocess(items: list[Image.Image], params: NoParams, ctx: StageContext) -> list[PixelInputs]:
    """Each image to model inputs, concurrently on the decode pool."""
    processor = ctx.model.processor
    direct = DirectPath.of(processor)
    func: Any = direct if direct is not None else (lambda image: run_processor(processor, image))
    return map_in_threads(func, items)
