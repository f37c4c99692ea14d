"""Registers the vision plugin: image loading, preprocessing, model and output stages, the loader, manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub.hookspecs import hookimpl

from . import forward, outputs
from .images import load_images
from .loading import load_vision_model
from .preprocess import preprocess

TASKHUB_REQUIRES = ("text",)  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("vision.load_image", load_images)
    register("vision.preprocess", preprocess)
    register("vision.forward", forward.forward)
    register("vision.zero_shot", forward.zero_shot, forward.ZeroShotParams)
    register("vision.classification_output", outputs.classification_output, outputs.ClassificationParams)
    register("vision.detection_output", outputs.detection_output, outputs.DetectionParams)
    register("vision.segmentation_output", outputs.segmentation_output, outputs.SegmentationParams)
    register("vision.depth_output", outputs.depth_output, outputs.DepthParams)
    register("vision.feature_output", outputs.feature_output, outputs.FeatureParams)
    register("vision.zero_shot_output", outputs.zero_shot_output)


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("vision.auto_model", load_vision_model)


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "vision")
