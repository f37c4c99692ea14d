"""token-classification (NER) stages: tokens with character offsets, per-token label scores, entity grouping.

The grouping follows transformers' TokenClassificationPipeline exactly (strategies none, simple, first,
average, max), so results are the same for the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from taskhub import StageContext
from taskhub.errors import ParamError, TaskhubError

from .classification import softmax
from .forward import ROWS_PER_FORWARD, forward_rows, groups_of
from .params import EntityParams, WordParams
from .tokenize import Encoded, check_texts, model_extras


@dataclass
class TokenChunks:
    """One text as one or more model rows, with each token's character offsets and special-token flag."""

    text: str
    rows: list[Encoded]
    offsets: list[list[tuple[int, int]]]
    special: list[list[int]]
    strided: bool

    def __len__(self) -> int:
        return max(len(row) for row in self.rows)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def tokenize_words(items: list[Any], params: WordParams, ctx: StageContext) -> list[TokenChunks]:
    """Truncate to the model's context, or split into overlapping chunks when `stride` is set."""
    check_texts(items)
    tokenizer = ctx.model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise TaskhubError("token-classification needs a fast tokenizer (a model with tokenizer.json)")
    limit = ctx.model.max_length
    if params.stride is not None and params.stride >= limit:
        raise ParamError(f"stride ({params.stride}) must be smaller than the model's context ({limit} tokens)")
    chunks = []
    for text in items:
        enc = tokenizer(
            text,
            truncation=True,
            max_length=limit,
            stride=params.stride or 0,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
            return_attention_mask=False,
        )
        count = len(enc["input_ids"]) if params.stride is not None else 1  # else: the truncated first chunk only
        extras = model_extras(tokenizer, enc)
        rows = [Encoded(enc["input_ids"][i], {k: enc[k][i] for k in extras}) for i in range(count)]
        offsets = [list(map(tuple, enc["offset_mapping"][i])) for i in range(count)]
        chunks.append(TokenChunks(text, rows, offsets, enc["special_tokens_mask"][:count], params.stride is not None))
    return chunks


@dataclass
class TokenScores:
    """Label probabilities of every token of every chunk: [T, num_labels] each."""

    chunks: TokenChunks
    scores: list[np.ndarray]


def token_scores(items: list[TokenChunks], params: BaseModel, ctx: StageContext) -> list[TokenScores]:
    rows = [row for item in items for row in item.rows]
    logits = forward_rows(
        rows, ctx, lambda out, row, i: out.logits[row, : len(rows[i])].float().cpu().numpy(), ROWS_PER_FORWARD
    )
    grouped = groups_of([len(item.rows) for item in items], [softmax(x) for x in logits])
    return [TokenScores(item, scores) for item, scores in zip(items, grouped)]


def group_entities(items: list[TokenScores], params: EntityParams, ctx: StageContext) -> list[list[dict[str, Any]]]:
    grouper = _Grouper(ctx.model.tokenizer, ctx.model.model.config.id2label, params.aggregation_strategy)
    results = []
    for item in items:
        if item.chunks.strided and params.aggregation_strategy == "none":
            raise ParamError('stride needs an aggregation_strategy other than "none" to merge the chunks')
        entities = []
        for c, scores in enumerate(item.scores):
            pre = grouper.pre_entities(item.chunks, c, scores)
            entities += [
                e
                for e in grouper.aggregate(pre)
                if e.get("entity") not in params.ignore_labels and e.get("entity_group") not in params.ignore_labels
            ]
        if len(item.scores) > 1:
            entities = _merge_overlapping(entities)
        results.append([_plain(e) for e in entities])
    return results


def _plain(entity: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values (numpy scalars become floats and ints)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in entity.items()}


def _merge_overlapping(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of entities overlapping across chunks keep the longer one (then the higher score)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda x: x["start"])
    merged, previous = [], entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and entity["score"] > previous["score"]):
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged


def _tag(label: str) -> tuple[str, str]:
    """("B"|"I", tag) of an IOB label; a label without prefix continues (I)."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


class _Grouper:
    """transformers' token-to-entity aggregation for one tokenizer, label map and strategy."""

    def __init__(self, tokenizer: Any, id2label: dict[int, str], strategy: str) -> None:
        self.tokenizer = tokenizer
        self.id2label = id2label
        self.strategy = strategy
        backend = getattr(tokenizer, "_tokenizer", None)
        self.word_aware = bool(backend and getattr(backend.model, "continuing_subword_prefix", None))

    def pre_entities(self, chunks: TokenChunks, c: int, scores: np.ndarray) -> list[dict[str, Any]]:
        """Every non-special token with its scores, offsets and whether it continues a word."""
        text, ids = chunks.text, chunks.rows[c].input_ids
        pre = []
        for idx, token_scores in enumerate(scores):
            if chunks.special[c][idx]:
                continue
            word = self.tokenizer.convert_ids_to_tokens(int(ids[idx]))
            start, end = chunks.offsets[c][idx]
            word_ref = text[start:end]
            if self.word_aware:
                is_subword = len(word) != len(word_ref)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if int(ids[idx]) == self.tokenizer.unk_token_id:
                word, is_subword = word_ref, False
            pre.append(
                {
                    "word": word,
                    "scores": token_scores,
                    "start": start,
                    "end": end,
                    "index": idx,
                    "is_subword": is_subword,
                }
            )
        return pre

    def aggregate(self, pre: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.strategy in ("none", "simple"):
            entities = []
            for p in pre:
                best = p["scores"].argmax()
                entities.append(
                    {
                        "entity": self.id2label[best],
                        "score": p["scores"][best],
                        "index": p["index"],
                        "word": p["word"],
                        "start": p["start"],
                        "end": p["end"],
                    }
                )
        else:
            entities = self._aggregate_words(pre)
        return entities if self.strategy == "none" else self._group(entities)

    def _aggregate_words(self, pre: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One entity per word: its sub-tokens agree on a label by the first/average/max strategy."""
        words, group = [], None
        for p in pre:
            if group is None:
                group = [p]
            elif p["is_subword"]:
                group.append(p)
            else:
                words.append(self._aggregate_word(group))
                group = [p]
        if group is not None:
            words.append(self._aggregate_word(group))
        return words

    def _aggregate_word(self, tokens: list[dict[str, Any]]) -> dict[str, Any]:
        word = self.tokenizer.convert_tokens_to_string([t["word"] for t in tokens])
        if self.strategy == "first":
            scores = tokens[0]["scores"]
        elif self.strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        best = scores.argmax()
        return {
            "entity": self.id2label[best],
            "score": scores[best],
            "word": word,
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
        }

    def _group(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adjacent entities with the same tag merge unless the next one begins a new entity (B-)."""
        groups, current = [], []
        for entity in entities:
            if current:
                bi, tag = _tag(entity["entity"])
                _, last_tag = _tag(current[-1]["entity"])
                if not (tag == last_tag and bi != "B"):
                    groups.append(self._group_one(current))
                    current = []
            current.append(entity)
        if current:
            groups.append(self._group_one(current))
        return groups

    def _group_one(self, entities: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": np.mean(np.nanmean([e["score"] for e in entities])),
            "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in entities]),
            "start": entities[0]["start"],
            "end": entities[-1]["end"],
        }
