"""text-classification stages: sequence-classification logits, then labels with scores as HF reports them."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from taskhub import StageContext

from .forward import forward_rows
from .params import LabelParams
from .tokenize import Encoded


def classify(items: list[Encoded], params: BaseModel, ctx: StageContext) -> list[np.ndarray]:
    """Logits per input: [num_labels], float32."""
    return forward_rows(items, ctx, lambda out, row, _: out.logits[row].float().cpu().numpy())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed as transformers' pipelines do (float32 numpy)."""
    shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def default_function(config: Any) -> str:
    """The score function transformers picks from a model config when none is asked for."""
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    if config.problem_type == "single_label_classification" or config.num_labels > 1:
        return "softmax"
    return getattr(config, "function_to_apply", "none")


def label_scores(items: list[np.ndarray], params: LabelParams, ctx: StageContext) -> list[list[dict[str, Any]]]:
    """`[{"label", "score"}]` per input, best first, `top_k` long."""
    config = ctx.model.model.config
    function = default_function(config) if params.function_to_apply == "default" else params.function_to_apply
    apply = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda x: x}[function]
    results = []
    for logits in items:
        scores = apply(logits)
        ranked = sorted(
            ({"label": config.id2label[i], "score": float(s)} for i, s in enumerate(scores)),
            key=lambda x: x["score"],
            reverse=True,
        )
        results.append(ranked if params.top_k is None else ranked[: params.top_k])
    return results
