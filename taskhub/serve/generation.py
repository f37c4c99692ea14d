"""The server's one call into text generation: today a shared Pipeline's stream, later the engine's handle.

Everything model-side the HTTP layer needs goes through here, so switching to the continuous-batching
engine (`taskhub_textgen.api` engine.submit -> handle with result, delta iterator, cancel) changes
`Submission` only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..pipeline import Pipeline

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}  # taskhub's -> OpenAI's


@dataclass
class Choice:
    """One finished sequence, ready for an OpenAI response."""

    index: int
    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None  # per token: token, logprob, bytes, top_logprobs


@dataclass
class Outcome:
    choices: list[Choice]
    prompt_tokens: int


class Submission:
    """One generation request on a shared Pipeline.

    Iterate `deltas()` in a worker thread (it blocks while decoding), then read `outcome()`.
    `cancel()`, from any thread, stops the decoding at the next token: a stream decodes only
    while it is pulled, so not pulling it is what stops the work.
    """

    def __init__(self, pipe: Pipeline, prompt: Any, params: dict[str, Any], n: int = 1) -> None:
        self.pipe, self.prompt, self.params, self.n = pipe, prompt, params, n
        self._cancelled = threading.Event()
        self._outcome: Outcome | None = None
        self._stream: Any = None

    def cancel(self) -> None:
        """Stop the work: an engine request handle is cancelled at once (its KV blocks freed, its
        reader woken); a static pipeline stream is simply no longer pulled."""
        self._cancelled.set()
        cancel = getattr(self._stream, "cancel", None)  # engine handles: thread-safe, frees the blocks
        if callable(cancel):
            cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def deltas(self) -> Iterator[tuple[int, str]]:
        """(choice index, text) as decoded; n > 1 runs as one batch and yields each choice whole at the end."""
        if self.n > 1:
            yield from self._batched()
            return
        stream = self._stream = self.pipe(self.prompt, stream=True, **self.params)
        try:
            for text in stream:
                if self._cancelled.is_set():
                    return
                yield 0, text
        except Exception:
            if self._cancelled.is_set():  # a closed engine handle may end with an error: expected
                return
            raise
        if self._cancelled.is_set():
            return
        generation = stream.generation
        self._outcome = Outcome(
            [
                self._choice(
                    0, generation.text or "", generation.finish_reason, len(generation.token_ids), generation.logprobs
                )
            ],
            int(generation.metrics.get("prompt_tokens", 0)),
        )

    def _batched(self) -> Iterator[tuple[int, str]]:
        records = self.pipe(
            self.prompt, return_full_text=False, return_metrics=True, num_return_sequences=self.n, **self.params
        )
        choices = [
            self._choice(i, r["generated_text"], r["finish_reason"], r["generated_tokens"], r.get("logprobs"))
            for i, r in enumerate(records)
        ]
        self._outcome = Outcome(choices, int(records[0]["prompt_tokens"]))
        for choice in choices:
            yield choice.index, choice.text

    def outcome(self) -> Outcome:
        """The finished choices and token counts; only after `deltas()` was exhausted."""
        if self._outcome is None:
            raise RuntimeError("outcome() before the generation finished")
        return self._outcome

    def _choice(self, index: int, text: str, reason: str, tokens: int, logprobs: list[dict] | None) -> Choice:
        return Choice(index, text, FINISH_REASONS.get(reason, reason), tokens, self._named(logprobs))

    def _named(self, logprobs: list[dict] | None) -> list[dict[str, Any]] | None:
        """taskhub's {token_id, logprob, top_logprobs} -> OpenAI's {token, logprob, bytes, top_logprobs}."""
        if logprobs is None:
            return None
        tokenizer = self.pipe.model.tokenizer

        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            token = tokenizer.decode([token_id])
            return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

        return [
            {
                **entry(step["token_id"], step["logprob"]),
                "top_logprobs": [entry(t["token_id"], t["logprob"]) for t in step["top_logprobs"]],
            }
            for step in logprobs
        ]


def engine_stats(pipes: list[Pipeline]) -> list[dict[str, Any]]:
    """KV blocks used and prefix hit rate of the generation engines behind `pipes`, for /metrics.

    A loaded text-generation model exposes its engine as `model.engine()` (None when it decodes
    static batches); models without one are left out, so the gauges are omitted.
    """
    out = []
    for pipe in pipes:
        engine = getattr(pipe.model, "engine", None)
        engine = engine() if callable(engine) else None
        if engine is None:
            continue
        stats = engine.stats()
        out.append(
            {
                "model": pipe.model_id or "",
                "kv_blocks_used": stats.blocks_used,
                "prefix_hit_rate": stats.prefix_hit_rate,
            }
        )
    return out
