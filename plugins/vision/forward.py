"""Model stages: batch the pixel tensors, run the model once per batch, hand each image its own outputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from taskhub import StageContext
from taskhub.errors import ParamError
from taskhub.registry import NoParams

from .loading import VisionModel
from .params import ZeroShotParams
from .preprocess import PixelInputs


@dataclass
class ImageOutput:
    """The model's outputs for one image (batch dim kept at 1, on CPU, float32) and its original size."""

    output: ModelOutput
    size: tuple[int, int]  # (height, width)


def batches(items: list[PixelInputs], vision: VisionModel) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Model-ready batches with the item indices they hold.

    Same-shaped images stack. Processors that emit a pixel_mask (DETR) are padded bottom/right to
    the largest image, as the processor pads a list; other shapes run in groups of equal shape.
    """
    shapes = [tuple((k, tuple(v.shape)) for k, v in item.tensors.items()) for item in items]
    if len(set(shapes)) > 1 and "pixel_mask" in items[0].tensors:
        groups = [list(range(len(items)))]
    else:
        groups = [[i for i, s in enumerate(shapes) if s == shape] for shape in dict.fromkeys(shapes)]
    for group in groups:
        chosen = [items[i].tensors for i in group]
        inputs = {key: _pad_stack([t[key] for t in chosen]) for key in chosen[0]}
        yield group, {k: _to_model(v, vision) for k, v in inputs.items()}


def _pad_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack [..., H, W] tensors, zero-padding bottom/right to the largest H and W."""
    if len({t.shape for t in tensors}) == 1:
        return torch.stack(tensors)
    height = max(t.shape[-2] for t in tensors)
    width = max(t.shape[-1] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), *tensors[0].shape[:-2], height, width))
    for row, t in enumerate(tensors):
        out[row, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def _to_model(tensor: torch.Tensor, vision: VisionModel) -> torch.Tensor:
    if tensor.is_floating_point():
        return tensor.to(device=vision.device, dtype=vision.dtype)
    return tensor.to(vision.device)


def split_output(output: ModelOutput, count: int) -> list[ModelOutput]:
    """One ModelOutput per image: every batch-first tensor sliced to [1, ...], moved to CPU as float32."""
    rows: list[dict[str, torch.Tensor]] = [{} for _ in range(count)]
    for key, value in output.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == count:
            value = value.detach().cpu()
            value = value.float() if value.is_floating_point() else value
            for row in range(count):
                rows[row][key] = value[row : row + 1]
    return [type(output)(**row) for row in rows]


def forward(items: list[PixelInputs], params: NoParams, ctx: StageContext) -> list[ImageOutput]:
    """Stage `vision.forward`: the task's model on the batch."""
    results: list[ImageOutput | None] = [None] * len(items)
    for group, inputs in batches(items, ctx.model):
        for index, output in zip(group, split_output(ctx.model.runner(**inputs), len(group))):
            results[index] = ImageOutput(output, items[index].size)
    return results  # type: ignore[return-value]


@dataclass
class LabelLogits:
    """Image-text logits of one image against the candidate labels."""

    logits: torch.Tensor  # [num_labels]
    labels: list[str]


def zero_shot(items: list[PixelInputs], params: ZeroShotParams, ctx: StageContext) -> list[LabelLogits]:
    """Stage `vision.zero_shot`: encode the label texts once per batch, score every image against them."""
    labels = params.candidate_labels
    if not labels:
        raise ParamError("zero-shot-image-classification needs candidate_labels, e.g. candidate_labels=['cat', 'dog'].")
    if "{}" not in params.hypothesis_template:
        raise ParamError(f"hypothesis_template must contain '{{}}' for the label, got {params.hypothesis_template!r}.")
    vision: VisionModel = ctx.model
    texts = [params.hypothesis_template.format(label) for label in labels]
    options: dict[str, object] = {"padding": True}
    if "siglip" in vision.model.config.model_type:
        options = {"padding": "max_length", "max_length": 64, "truncation": True}
    text_inputs = {k: v.to(vision.device) for k, v in vision.tokenizer(texts, return_tensors="pt", **options).items()}
    results: list[LabelLogits | None] = [None] * len(items)
    for group, inputs in batches(items, vision):
        logits = vision.model(**text_inputs, **inputs).logits_per_image.float().cpu()  # [B, num_labels]
        for row, index in enumerate(group):
            results[index] = LabelLogits(logits[row], list(labels))
    return results  # type: ignore[return-value]
