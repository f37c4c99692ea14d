"""Registers the vision plugin: image loading, preprocessing, model and output stages, the loader, manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub.hookspecs import hookimpl

TASKHUB_REQUIRES = ("text",)  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("vision.load_image", "taskhub_vision.images:load_images")
    register("vision.preprocess", "taskhub_vision.preprocess:preprocess")
    register("vision.forward", "taskhub_vision.forward:forward")
    register("vision.zero_shot", "taskhub_vision.forward:zero_shot", "taskhub_vision.params:ZeroShotParams")
    register(
        "vision.classification_output",
        "taskhub_vision.outputs:classification_output",
        "taskhub_vision.params:ClassificationParams",
    )
    register(
        "vision.detection_output", "taskhub_vision.outputs:detection_output", "taskhub_vision.params:DetectionParams"
    )
    register(
        "vision.segmentation_output",
        "taskhub_vision.outputs:segmentation_output",
        "taskhub_vision.params:SegmentationParams",
    )
    register("vision.depth_output", "taskhub_vision.outputs:depth_output", "taskhub_vision.params:DepthParams")
    register("vision.feature_output", "taskhub_vision.outputs:feature_output", "taskhub_vision.params:FeatureParams")
    register("vision.zero_shot_output", "taskhub_vision.outputs:zero_shot_output")


@hookimpl
def register_input_kinds(register: Callable[..., None]) -> None:
    register("image", "an image path, bytes, PIL.Image or numpy array", by_path=True)


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("vision.auto_model", "taskhub_vision.loading:load_vision_model")


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "vision")
