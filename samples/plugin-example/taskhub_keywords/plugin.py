"""Registers the keyword-extraction stage and the folder holding its task manifest."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from taskhub import StageContext, hookimpl
from taskhub.errors import BadInputError

TASKHUB_REQUIRES = ("text",)  # its manifest uses the text plugin's model loader

WORD = re.compile(r"[A-Za-z][A-Za-z-]{2,}")
STOPWORDS = frozenset(
    "the and for are was were with that this from have has had not but you your its they them their".split()
)


class KeywordParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_n: int = Field(5, ge=1, description="How many keywords to return")


def _embed(texts: list[str], ctx: StageContext) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings with the task's encoder (the built-in text loader)."""
    tok = ctx.model.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(ctx.device)
    hidden = ctx.model.model(**tok).last_hidden_state
    mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def extract_keywords(items: list[Any], params: KeywordParams, ctx: StageContext) -> list[Any]:
    """Rank each text's distinct words by cosine similarity to the whole text."""
    results = []
    for index, text in enumerate(items):
        words = sorted({w.lower() for w in WORD.findall(text)} - STOPWORDS)
        if not words:
            raise BadInputError(f"Input {index} has no words to rank; expected text with at least one word.")
        doc, cands = _embed([text], ctx), _embed(words, ctx)
        scores = (cands @ doc.T).squeeze(-1)
        top = torch.topk(scores, min(params.top_n, len(words)))
        results.append([{"keyword": words[i], "score": float(s)} for s, i in zip(top.values, top.indices)])
    return results


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("keywords.extract", extract_keywords, KeywordParams)


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_keywords") / "manifests")
