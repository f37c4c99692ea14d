"""The params models of the vision plugin's stages: pydantic only, no torch, so registering and validating a
manifest stay cheap."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ZeroShotParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidate_labels: list[str] | None = Field(None, description="Labels to score the image against (required)")
    hypothesis_template: str = Field("This is a photo of {}.", description="Text per label; {} is the label")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassificationParams(_Params):
    top_k: int = Field(5, ge=1, description="How many labels to return (at most the model's number of labels)")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="Scores from logits; default as HF: sigmoid for one or multi-label, else softmax"
    )


class DetectionParams(_Params):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Keep detections scoring above this")


class SegmentationParams(_Params):
    subtask: Literal["panoptic", "instance", "semantic"] | None = Field(
        None, description="Default: the first the model supports of panoptic, instance, semantic"
    )
    threshold: float = Field(0.9, ge=0.0, le=1.0, description="Drop predicted masks scoring below this")
    mask_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Mask probability that counts as inside")
    overlap_mask_area_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Drop small disconnected segments")
    mask_format: Literal["rle", "pil"] = Field(
        "rle", description="rle: COCO run-length dict (JSON-ready); pil: mode L 0/255 PIL image as HF returns"
    )


class DepthParams(_Params):
    depth_format: Literal["png", "pil"] = Field(
        "png", description="png: the 8-bit depth image as a PNG data URI (JSON-ready); pil: a PIL image as HF returns"
    )
    depth_values: Literal["summary", "list"] = Field(
        "summary", description="predicted_depth as {shape, min, max, mean} or as the full [H][W] nested list"
    )


class FeatureParams(_Params):
    pool: bool = Field(False, description="Return the model's pooled output instead of every token's hidden state")
