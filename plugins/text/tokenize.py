"""Tokenization shared by the text tasks: text in, token ids out, padded later per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskhub import StageContext
from taskhub.errors import BadInputError


class TokenizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_length: int | None = Field(None, ge=1, description="Truncate to this many tokens (default: the model's limit)")


@dataclass
class Encoded:
    """One tokenized input; len() and sort_length are its token count (the core sorts batches by sort_length)."""

    input_ids: list[int]
    extra: dict[str, list[int]] = field(default_factory=dict)  # other per-token model inputs (token_type_ids)

    def __len__(self) -> int:
        return len(self.input_ids)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def check_texts(items: list[Any], what: str = "Input") -> None:
    """Every item must be a string (the core checks top-level inputs; stages also see nested fields)."""
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise BadInputError(f"{what} {index} is {describe(text)}; expected a string.")


def describe(value: Any) -> str:
    """How an error message names a wrong value's type: None, a list, an int."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def encode_texts(texts: list[str], model: Any, max_length: int | None = None) -> list[Encoded]:
    """Token ids of each text, truncated to `max_length` (at most the model's limit)."""
    if not texts:
        return []
    limit = min(max_length or model.max_length, model.max_length)
    if model.lowercase:
        texts = [text.lower() for text in texts]
    encoded = model.tokenizer(texts, truncation=True, max_length=limit, return_attention_mask=False)
    extras = model_extras(model.tokenizer, encoded)
    return [Encoded(ids, {k: encoded[k][i] for k in extras}) for i, ids in enumerate(encoded["input_ids"])]


def model_extras(tokenizer: Any, encoded: Any) -> list[str]:
    """Per-token model inputs the tokenizer produced besides ids and mask (token_type_ids)."""
    return [k for k in tokenizer.model_input_names if k not in ("input_ids", "attention_mask") and k in encoded]


def tokenize(items: list[Any], params: TokenizeParams, ctx: StageContext) -> list[Encoded]:
    """Texts longer than the model's context are truncated to it (the result covers the prefix)."""
    check_texts(items)
    return encode_texts(items, ctx.model, params.max_length)
