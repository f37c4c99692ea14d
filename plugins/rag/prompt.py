"""The generative RAG prompt: numbered passages and the question in a template, fitted into the generator's context."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from taskhub.errors import BadInputError, ParamError

from .embedder import Embedder

DEFAULT_TEMPLATE = (
    "Answer the question using only the numbered passages below. "
    "Cite each passage you use with its number in square brackets, like [1].\n\n"
    "{passages}\n\n"
    "Question: {question}\n"
    "Answer:"
)
WORD_END = re.compile(r"\S+")


@dataclass
class Retrieved:
    """A question with the passages given for it (numbered from 1 in rank order), those left out, and the
    index's embedder; passes between stages."""

    question: str
    passages: list[dict[str, Any]]
    embedder: Embedder
    dropped: list[dict[str, Any]] = field(default_factory=list)  # retrieved, but not given (did not fit)

    def numbered(self) -> list[dict[str, Any]]:
        return [{"n": n, **p} for n, p in enumerate(self.passages, 1)]


def check_template(template: str) -> str:
    missing = [name for name in ("{passages}", "{question}") if name not in template]
    if missing:
        raise ParamError(
            f"prompt_template must contain {' and '.join(missing)} (it has the placeholders {{passages}} and {{question}})"
        )
    return template


def build_prompt(item: Retrieved, template: str = DEFAULT_TEMPLATE) -> str:
    """The template with its passages ("[n] text", blank-line separated) and question filled in."""
    passages = "\n\n".join(f"[{n}] {p['text'].strip()}" for n, p in enumerate(item.passages, 1))
    return check_template(template).replace("{passages}", passages).replace("{question}", item.question)


def generation_input(pipe: Any, prompt: str, chat: bool | None) -> Any:
    """The prompt as a user message when the tokenizer has a chat template (or `chat` says so), else plain text."""
    tokenizer = getattr(pipe.model, "tokenizer", None)
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    return [{"role": "user", "content": prompt}] if use_chat else prompt


def prompt_length(pipe: Any, source: Any) -> int:
    """Prompt tokens the text-generation task will feed the decoder for `source` (text, or chat messages)."""
    tokenizer = pipe.model.tokenizer
    if isinstance(source, str):
        return len(tokenizer(source)["input_ids"])
    text = tokenizer.apply_chat_template(source, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_passages(item: Retrieved, template: str, length: Callable[[str], int], room: int) -> Retrieved:
    """`item` with as many of its best passages as keep the prompt within `room` tokens.

    Lowest-ranked passages go first; when even the best one alone is too long, its text is cut at a
    word end (its `end` offset moves with it and it is marked `"trimmed": true`). The passages left
    out travel in `dropped`. A template and question that leave no room for any passage text are refused.
    """

    def fits(passages: list[dict[str, Any]]) -> bool:
        return length(build_prompt(replace(item, passages=passages), template)) <= room

    passages = item.passages
    if fits(passages):
        return item
    lo, hi = 1, len(passages) - 1  # invariant: passages[:hi + 1] does not fit; find the most that do
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(passages[:mid]):
            lo = mid + 1
        else:
            hi = mid - 1
    kept = hi
    if kept >= 1:
        return replace(item, passages=passages[:kept], dropped=[*passages[kept:], *item.dropped])
    best = passages[0]
    ends = [m.end() for m in WORD_END.finditer(best["text"])]
    lo, hi = 0, len(ends) - 1  # the longest word-end cut of the best passage that fits
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits([{**best, "text": best["text"][: ends[mid]]}]):
            lo = mid + 1
        else:
            hi = mid - 1
    if hi < 0:
        raise BadInputError(
            f"the question and prompt template alone leave no room for a passage in the generator's {room} prompt "
            "tokens (its context less max_new_tokens); shorten the question or template, or lower max_new_tokens"
        )
    cut = ends[hi]
    trimmed = {**best, "text": best["text"][:cut], "end": best["start"] + cut, "trimmed": True}
    return replace(item, passages=[trimmed], dropped=[*passages[1:], *item.dropped])
