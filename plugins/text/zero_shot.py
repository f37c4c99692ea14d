"""zero-shot-classification stages: one NLI premise/hypothesis pair per candidate label, entailment scores."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from taskhub import StageContext
from taskhub.errors import BadInputError, TaskhubError

from .forward import ROWS_PER_FORWARD, forward_rows, groups_of
from .params import PairParams, ZeroShotParams
from .tokenize import Encoded, check_texts, model_extras


@dataclass
class LabelPairs:
    """One text paired with each candidate label's hypothesis."""

    sequence: str
    labels: list[str]
    rows: list[Encoded]

    def __len__(self) -> int:
        return max(len(row) for row in self.rows)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def check_template(template: str) -> None:
    """The template must hold one bare {} and no other field: `str.format` would otherwise fail on a missing
    argument, or reach into the label's attributes ("{0.__class__}")."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError as exc:  # a lone { or }
        raise BadInputError(
            f"hypothesis_template {template!r} is not a valid template ({exc}); write {{{{ for a literal {{."
        ) from None
    fields = [field for field in fields if field[0] is not None]
    if not fields:
        raise BadInputError(f"hypothesis_template {template!r} has no {{}} where the label goes.")
    if fields != [("", "", None)]:
        raise BadInputError(
            f"hypothesis_template {template!r} must hold exactly one {{}} where the label goes and no other {{...}} field."
        )


def nli_pairs(items: list[Any], params: PairParams, ctx: StageContext) -> list[LabelPairs]:
    """Premise = the text (truncated first when too long), hypothesis = the template filled with a label."""
    check_texts(items)
    labels = params.candidate_labels
    if not labels:
        raise BadInputError("zero-shot-classification needs candidate_labels=[...] (at least one label).")
    check_template(params.hypothesis_template)
    tokenizer = ctx.model.tokenizer
    hypotheses = [params.hypothesis_template.format(label) for label in labels]
    pairs = []
    for text in items:
        enc = _tokenize_pairs(tokenizer, [text] * len(labels), hypotheses, ctx.model.max_length)
        extras = model_extras(tokenizer, enc)
        rows = [Encoded(ids, {k: enc[k][i] for k in extras}) for i, ids in enumerate(enc["input_ids"])]
        pairs.append(LabelPairs(text, list(labels), rows))
    return pairs


def _tokenize_pairs(tokenizer: Any, premises: list[str], hypotheses: list[str], limit: int) -> Any:
    try:
        return tokenizer(premises, hypotheses, truncation="only_first", max_length=limit, return_attention_mask=False)
    except Exception as exc:  # the hypothesis alone is longer than the model's context
        if "too short" not in str(exc):
            raise
        return tokenizer(premises, hypotheses, truncation=False, return_attention_mask=False)


@dataclass
class PairLogits:
    pairs: LabelPairs
    logits: np.ndarray  # [num_labels, num_nli_classes]


def nli_logits(items: list[LabelPairs], params: BaseModel, ctx: StageContext) -> list[PairLogits]:
    rows = [row for item in items for row in item.rows]
    logits = forward_rows(rows, ctx, lambda out, row, _: out.logits[row].float().cpu().numpy(), ROWS_PER_FORWARD)
    grouped = groups_of([len(item.rows) for item in items], logits)
    return [PairLogits(item, np.stack(group)) for item, group in zip(items, grouped)]


def entailment_id(config: Any) -> int:
    """Index of the model's entailment class, found by label name."""
    for label, index in config.label2id.items():
        if label.lower().startswith("entail"):
            return int(index)
    raise TaskhubError(
        f"The model's labels {sorted(config.label2id)} have no 'entailment' label; "
        "zero-shot-classification needs an NLI model."
    )


def zero_shot_scores(items: list[PairLogits], params: ZeroShotParams, ctx: StageContext) -> list[dict[str, Any]]:
    """`{"sequence", "labels", "scores"}` with labels best first, as transformers returns them."""
    entail = entailment_id(ctx.model.model.config)
    contradiction = -1 if entail == 0 else 0
    results = []
    for item in items:
        logits = item.logits
        if params.multi_label or len(item.pairs.labels) == 1:
            pair = np.exp(logits[:, [contradiction, entail]])
            scores = (pair / pair.sum(-1, keepdims=True))[:, 1]
        else:
            exp = np.exp(logits[:, entail])
            scores = exp / exp.sum(-1, keepdims=True)
        top = list(reversed(scores.argsort()))
        results.append(
            {
                "sequence": item.pairs.sequence,
                "labels": [item.pairs.labels[i] for i in top],
                "scores": scores[top].tolist(),
            }
        )
    return results
