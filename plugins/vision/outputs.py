"""Postprocess stages: model outputs -> HF-shaped, JSON-ready results for each vision task."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from taskhub import StageContext
from taskhub.errors import ParamError
from taskhub.registry import NoParams

from .encoding import image_to_png_uri, mask_to_rle
from .forward import ImageOutput, LabelLogits
from .loading import VisionModel
from .params import ClassificationParams, DepthParams, DetectionParams, FeatureParams, SegmentationParams


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _score_function(config: Any, requested: str | None) -> str:
    """HF's default: none for regression, sigmoid for multi-label or one label, else softmax."""
    if requested is not None:
        return requested
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def classification_output(items: list[ImageOutput], params: ClassificationParams, ctx: StageContext) -> list[Any]:
    """Stage `vision.classification_output`: [{"label", "score"}] best first."""
    config = ctx.model.model.config
    apply = {"softmax": _softmax, "sigmoid": _sigmoid, "none": lambda x: x}[
        _score_function(config, params.function_to_apply)
    ]
    top_k = min(params.top_k, config.num_labels)
    results = []
    for item in items:
        scores = apply(item.output.logits[0].numpy())
        ranked = sorted(
            ({"label": config.id2label[i], "score": score.item()} for i, score in enumerate(scores)),
            key=lambda x: x["score"],
            reverse=True,
        )
        results.append(ranked[:top_k])
    return results


def detection_output(items: list[ImageOutput], params: DetectionParams, ctx: StageContext) -> list[Any]:
    """Stage `vision.detection_output`: [{"score", "label", "box": {xmin, ymin, xmax, ymax}}] in pixels."""
    vision: VisionModel = ctx.model
    results = []
    for item in items:
        target = torch.IntTensor([list(item.size)])
        found = vision.processor.post_process_object_detection(item.output, params.threshold, target)[0]
        results.append(
            [
                {"score": score, "label": vision.model.config.id2label[label], "box": _box(box)}
                for score, label, box in zip(found["scores"].tolist(), found["labels"].tolist(), found["boxes"])
            ]
        )
    return results


def _box(box: torch.Tensor) -> dict[str, int]:
    xmin, ymin, xmax, ymax = box.int().tolist()
    return {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}


def segmentation_output(items: list[ImageOutput], params: SegmentationParams, ctx: StageContext) -> list[Any]:
    """Stage `vision.segmentation_output`: [{"score", "label", "mask"}], one entry per segment."""
    return [_segments(item, params, ctx.model) for item in items]


def _segments(item: ImageOutput, params: SegmentationParams, vision: VisionModel) -> list[dict[str, Any]]:
    """HF's image-segmentation postprocess: panoptic or instance segments, else one mask per semantic class."""
    processor, config = vision.processor, vision.model.config
    encode = mask_to_rle if params.mask_format == "rle" else _pil_mask
    instance_fn = None
    if params.subtask in ("panoptic", None) and hasattr(processor, "post_process_panoptic_segmentation"):
        instance_fn = processor.post_process_panoptic_segmentation
    elif params.subtask in ("instance", None) and hasattr(processor, "post_process_instance_segmentation"):
        instance_fn = processor.post_process_instance_segmentation
    if instance_fn is not None:
        found = instance_fn(
            item.output,
            threshold=params.threshold,
            mask_threshold=params.mask_threshold,
            overlap_mask_area_threshold=params.overlap_mask_area_threshold,
            target_sizes=[item.size],
        )[0]
        segmentation = found["segmentation"].numpy()
        return [
            {
                "score": seg["score"],
                "label": config.id2label[seg["label_id"]],
                "mask": encode(segmentation == seg["id"]),
            }
            for seg in found["segments_info"]
        ]
    if params.subtask in ("semantic", None) and hasattr(processor, "post_process_semantic_segmentation"):
        segmentation = processor.post_process_semantic_segmentation(item.output, target_sizes=[item.size])[0].numpy()
        return [
            {"score": None, "label": config.id2label[label], "mask": encode(segmentation == label)}
            for label in np.unique(segmentation).tolist()
        ]
    raise ParamError(f"subtask {params.subtask!r} is not supported by model type {config.model_type!r}.")


def _pil_mask(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255)


def depth_output(items: list[ImageOutput], params: DepthParams, ctx: StageContext) -> list[Any]:
    """Stage `vision.depth_output`: {"predicted_depth": summary or [H][W], "depth": 8-bit image}."""
    processor = ctx.model.processor
    results = []
    for item in items:
        depth = processor.post_process_depth_estimation(item.output, [item.size])[0]["predicted_depth"]  # [H, W]
        values = depth.numpy()
        span = values.max() - values.min()
        scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
        image = Image.fromarray((scaled * 255).astype("uint8"))
        if params.depth_values == "list":
            predicted: Any = values.tolist()
        else:
            predicted = {
                "shape": list(values.shape),
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
            }
        results.append(
            {"predicted_depth": predicted, "depth": image_to_png_uri(image) if params.depth_format == "png" else image}
        )
    return results


def feature_output(items: list[ImageOutput], params: FeatureParams, ctx: StageContext) -> list[Any]:
    """Stage `vision.feature_output`: nested lists shaped like HF's ([1, tokens, hidden] or [1, hidden] pooled)."""
    results = []
    for item in items:
        if params.pool:
            if item.output.get("pooler_output") is None:
                raise ParamError("pool=True needs a model with a pooler; this model returns no pooler_output.")
            results.append(item.output["pooler_output"].tolist())
        else:
            results.append(item.output[0].tolist())
    return results


def zero_shot_output(items: list[LabelLogits], params: NoParams, ctx: StageContext) -> list[Any]:
    """Stage `vision.zero_shot_output`: [{"score", "label"}] best first (softmax; sigmoid for SigLIP)."""
    sigmoid = "siglip" in ctx.model.model.config.model_type
    results = []
    for item in items:
        scores = (torch.sigmoid(item.logits) if sigmoid else item.logits.softmax(dim=-1)).tolist()
        ranked = sorted(zip(scores, item.labels), key=lambda pair: -pair[0])
        results.append([{"score": score, "label": label} for score, label in ranked])
    return results
