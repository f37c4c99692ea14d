"""The params models of the text plugin's stages: pydantic only, no torch, so registering and validating a
manifest stay cheap."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Pooling = Literal["mean", "cls", "none"]


class PoolParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pooling: Pooling = Field("mean", description="mean or cls: one vector per text; none: one vector per token")
    normalize: bool | None = Field(
        None, description="L2-normalise the vectors (default: on for pooled vectors, off for token vectors)"
    )


class SimilarityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pooling: Literal["mean", "cls"] = Field("mean", description="How token vectors become one sentence vector")


class LabelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(1, ge=1, description="How many labels to return, best first; null returns all")
    function_to_apply: Literal["default", "softmax", "sigmoid", "none"] = Field(
        "default",
        description="Scores from logits; default: sigmoid for one label or multi-label models, "
        "softmax for several labels, none for regression",
    )


class WordParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stride: int | None = Field(
        None,
        ge=0,
        description="Tokens of overlap between chunks of a text longer than the model's context; "
        "unset: long texts are truncated",
    )


class EntityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = Field(
        "none", description="How tokens fuse into entities, as in transformers"
    )
    ignore_labels: list[str] = Field(default_factory=lambda: ["O"], description="Labels left out of the result")


class PairParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidate_labels: list[str] = Field(
        default_factory=list, description="Labels to choose from: a list, or one string of comma-separated labels"
    )
    hypothesis_template: str = Field("This example is {}.", description="Turns a label into an NLI hypothesis")

    @field_validator("candidate_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [label.strip() for label in value.split(",") if label.strip()]
        return value


class ZeroShotParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    multi_label: bool = Field(
        False, description="Score each label on its own (entailment vs contradiction) instead of across labels"
    )


class FillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(5, ge=1, description="How many fillers to return per mask")
    targets: list[str] | None = Field(
        None, description="Score only these words (a word outside the vocabulary counts as its first token)"
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _one_target(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SpanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_seq_len: int | None = Field(
        None, ge=1, description="Tokens per span, question included (default: min(model limit, 384))"
    )
    doc_stride: int | None = Field(
        None,
        ge=0,
        description="Tokens of overlap between spans of a long context (default: min(max_seq_len // 2, 128))",
    )


class AnswerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(1, ge=1, description="How many answers to return, best first")
    max_answer_len: int = Field(15, ge=1, description="Longest answer considered, in tokens")
    handle_impossible_answer: bool = Field(False, description="Allow the empty answer (start=end=0)")
    align_to_words: bool = Field(True, description="Widen answers to whole words (for space-separated languages)")
