"""Answers from retrieved passages: extractive (best sentences, offline) or generative (prompt + decoder), with [n] citations."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from .chunking import sentence_spans
from .prompt import Retrieved, build_prompt, fit_passages, generation_input, prompt_length

CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def cited_numbers(answer: str) -> list[int]:
    """Every n of the answer's [n] and [n, m] markers, in order of first appearance."""
    seen: list[int] = []
    for match in CITATION.finditer(answer):
        for part in match.group(1).split(","):
            n = int(part)
            if n not in seen:
                seen.append(n)
    return seen


def result(item: Retrieved, answer: str) -> dict[str, Any]:
    """{"answer", "citations", "passages", "invalid_citations", "dropped_passages"}: citations are the cited
    passages among those given; `dropped_passages` were retrieved but left out of the prompt (did not fit)."""
    numbers = cited_numbers(answer)
    valid = [n for n in numbers if 1 <= n <= len(item.passages)]
    citations = [
        {"n": n, **{k: item.passages[n - 1][k] for k in ("doc_id", "chunk_id", "source", "start", "end")}}
        for n in valid
    ]
    return {
        "answer": answer,
        "citations": citations,
        "passages": item.numbered(),
        "invalid_citations": [n for n in numbers if n not in valid],
        "dropped_passages": item.dropped,
    }


def extractive_answer(item: Retrieved, num_sentences: int, min_relevance: float) -> dict[str, Any]:
    """Up to `num_sentences` passage sentences closest to the question (cosine), each scoring at least
    `min_relevance` x the best one's, in passage order, each followed by its [n]. Headings are not sentences."""
    sentences = [
        (n, start, " ".join(p["text"][start:end].split()))
        for n, p in enumerate(item.passages, 1)
        for start, end in sentence_spans(p["text"])
        if not p["text"][start:end].startswith("#")
    ]
    if not sentences:
        return result(item, "")
    vectors = item.embedder.embed([item.question] + [s for _, _, s in sentences])
    scores = vectors[1:] @ vectors[0]
    best = [
        i
        for i in np.argsort(-scores, kind="stable")[:num_sentences].tolist()
        if scores[i] >= min_relevance * scores.max()
    ]
    chosen = sorted(best, key=lambda i: (sentences[i][0], sentences[i][1]))
    return result(item, " ".join(f"{sentences[i][2]} [{sentences[i][0]}]" for i in chosen))


_generators: dict[tuple[str, str | None], Any] = {}
_generators_lock = threading.Lock()


def generator(model: str, device: str | None) -> Any:
    """The text-generation pipeline of `model` (public API), one per process."""
    import taskhub

    with _generators_lock:
        key = (model, device)
        if key not in _generators:
            _generators[key] = taskhub.pipeline("text-generation", model, device=device)
        return _generators[key]


def fit_to_context(pipe: Any, item: Retrieved, template: str, chat: bool | None, max_new_tokens: Any) -> Retrieved:
    """The item with the passages that fit the generator's context (a model without a fixed one takes them all)."""
    context = getattr(pipe.model, "context", None)
    if context is None or not isinstance(max_new_tokens, int) or max_new_tokens >= context[0]:
        return item  # no limit, or one text-generation itself refuses with its own message

    def length(prompt: str) -> int:
        return prompt_length(pipe, generation_input(pipe, prompt, chat))

    return fit_passages(item, template, length, context[0] - max_new_tokens)


class AnswerStream:
    """Iterator of the answer's text deltas; once exhausted, `.result` holds the full answer with its citations."""

    def __init__(self, item: Retrieved, deltas: Iterator[str]) -> None:
        self.item = item
        self._deltas = deltas
        self._parts: list[str] = []
        self.result: dict[str, Any] | None = None

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> str:
        try:
            delta = next(self._deltas)
        except StopIteration:
            self.result = result(self.item, "".join(self._parts).strip())
            raise
        self._parts.append(delta)
        return delta


def generative_answers(
    items: list[Retrieved],
    model: str,
    device: str | None,
    template: str,
    chat: bool | None,
    controls: dict[str, Any],
    stream: bool,
) -> list[Any]:
    """Answers from the decoder through the text-generation task: one prompt per question, parsed for [n].

    Each prompt is first fitted into the model's context less max_new_tokens (see fit_passages)."""
    pipe = generator(model, device)
    items = [fit_to_context(pipe, item, template, chat, controls.get("max_new_tokens")) for item in items]
    prompts = [generation_input(pipe, build_prompt(item, template), chat) for item in items]
    if stream:
        return [AnswerStream(item, iter(pipe(prompt, stream=True, **controls))) for item, prompt in zip(items, prompts)]
    outputs = pipe(prompts, return_full_text=False, **controls)
    answers = []
    for item, output in zip(items, outputs):
        text = output[0]["generated_text"]
        if isinstance(text, list):  # chat output: the assistant message
            text = text[-1]["content"]
        answers.append(result(item, str(text).strip()))
    return answers
