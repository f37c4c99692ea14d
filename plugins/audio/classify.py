"""audio-classification stages: logits of the classification head, then the top labels with scores."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel

from taskhub import StageContext

from .features import Features, forward_by_shape
from .params import LabelParams


def classify(items: list[Features], params: BaseModel, ctx: StageContext) -> list[torch.Tensor]:
    """Model stage: [num_labels] logits per item."""
    return forward_by_shape(ctx.model.model, items, ctx.device)


def top_labels(items: list[torch.Tensor], params: LabelParams, ctx: StageContext) -> list[list[dict[str, Any]]]:
    """Postprocess: [{"score", "label"}] best first, like HF's audio-classification pipeline."""
    config = ctx.model.model.config
    function = params.function_to_apply or {
        "regression": "none",
        "multi_label_classification": "sigmoid",
    }.get(config.problem_type, "softmax")
    k = min(params.top_k or config.num_labels, config.num_labels)
    out = []
    for logits in items:
        logits = logits.float()
        scores = logits.softmax(-1) if function == "softmax" else logits.sigmoid() if function == "sigmoid" else logits
        values, ids = scores.topk(k)
        out.append([{"score": s, "label": config.id2label[i]} for s, i in zip(values.tolist(), ids.tolist())])
    return out
