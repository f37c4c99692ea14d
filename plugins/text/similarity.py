"""sentence-similarity stages: embed a source sentence and candidates, score candidates by cosine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel

from taskhub import StageContext
from taskhub.errors import BadInputError

from .embeddings import embed
from .forward import groups_of
from .params import SimilarityParams
from .tokenize import Encoded, TokenizeParams, describe, encode_texts

EXPECTED = '{"source_sentence": str, "sentences": [str, ...]}'


@dataclass
class SentenceGroup:
    """The source sentence (row 0) and the candidate sentences, tokenized."""

    rows: list[Encoded]

    def __len__(self) -> int:
        return sum(len(row) for row in self.rows)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def check_group(item: Any, index: int) -> list[str]:
    """[source, *sentences] of one input, or a BadInputError naming what is wrong."""
    if not isinstance(item, dict) or "source_sentence" not in item or "sentences" not in item:
        got = f"fields {sorted(item)}" if isinstance(item, dict) else describe(item)
        raise BadInputError(f"Input {index} must be {EXPECTED}; got {got}.")
    source, sentences = item["source_sentence"], item["sentences"]
    if not isinstance(source, str):
        raise BadInputError(f"Input {index}: source_sentence is {describe(source)}; expected a string.")
    if isinstance(sentences, str) or not isinstance(sentences, (list, tuple)) or not sentences:
        raise BadInputError(f"Input {index}: sentences must be a non-empty list of strings.")
    for k, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise BadInputError(f"Input {index}: sentences[{k}] is {describe(sentence)}; expected a string.")
    extra = sorted(set(item) - {"source_sentence", "sentences"})
    if extra:
        raise BadInputError(f"Input {index} has unknown fields {extra}; expected {EXPECTED}.")
    return [source, *sentences]


def similarity_inputs(items: list[Any], params: TokenizeParams, ctx: StageContext) -> list[SentenceGroup]:
    texts = [check_group(item, index) for index, item in enumerate(items)]
    flat = encode_texts([t for group in texts for t in group], ctx.model, params.max_length)
    return [SentenceGroup(rows) for rows in groups_of([len(group) for group in texts], flat)]


def embed_groups(items: list[SentenceGroup], params: SimilarityParams, ctx: StageContext) -> list[torch.Tensor]:
    """Vectors of every sentence of the batch, [1 + n, H] per input; all sentences share forward passes."""
    rows = [row for item in items for row in item.rows]
    vectors = list(embed(rows, ctx, params.pooling))
    return [torch.stack(group) for group in groups_of([len(item.rows) for item in items], vectors)]


def cosine_scores(items: list[torch.Tensor], params: BaseModel, ctx: StageContext) -> list[list[float]]:
    """Cosine of the source sentence (row 0) with each candidate, in candidate order."""
    results = []
    for vectors in items:
        unit = torch.nn.functional.normalize(vectors, p=2, dim=-1)
        results.append((unit[1:] @ unit[0]).tolist())
    return results
