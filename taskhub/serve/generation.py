"""The server's one call into text generation: a shared Pipeline's stream (an engine request handle for
native decoders, whose concurrent requests share decode steps).

Everything model-side the HTTP layer needs goes through here.
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
class Delta:
    """Text of one choice as it is decoded, with the logprobs of the tokens it covers (when asked for)."""

    index: int
    text: str
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class Outcome:
    choices: list[Choice]
    prompt_tokens: int
    decoder_tpot_s: float | None = None  # the first sequence's time per output token, timed by the decoder


def engine_of(pipe: Pipeline) -> Any:
    """The continuous-batching engine behind a text-generation Pipeline, or None (static batches)."""
    engine = getattr(pipe.model, "engine", None)
    return engine() if callable(engine) else None


class Submission:
    """One generation request on a shared Pipeline.

    Iterate `deltas()` in a worker thread (it blocks while decoding), then read `outcome()`.
    `cancel()`, from any thread, stops the decoding: an engine request is cancelled at once (every
    one of its n sequences, their KV blocks freed); a static stream is simply no longer pulled.
    """

    def __init__(self, pipe: Pipeline, prompt: Any, params: dict[str, Any], n: int = 1) -> None:
        self.pipe, self.prompt, self.params, self.n = pipe, prompt, params, n
        self._cancelled = threading.Event()
        self._outcome: Outcome | None = None
        self._stream: Any = None

    def cancel(self) -> None:
        self._cancelled.set()
        self._stop_stream()

    def _stop_stream(self) -> None:
        cancel = getattr(self._stream, "cancel", None)  # engine handles: thread-safe, frees the blocks
        if callable(cancel):
            cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def deltas(self) -> Iterator[Delta | Choice]:
        """The choices' text as decoded, token by token, and each Choice as soon as it has finished; with
        n > 1 the n sequences decode together (one engine request) and their items come interleaved."""
        extra = {"num_return_sequences": self.n} if self.n > 1 else {}
        stream = self._stream = self.pipe(self.prompt, stream=True, **extra, **self.params)
        items = stream.events() if self.n > 1 else _one_sequence(stream)
        choices: dict[int, Choice] = {}
        metrics: dict[str, Any] = {}
        ended = False
        try:
            if self._cancelled.is_set():  # cancelled while the request was being submitted
                return
            for index, item in items:
                if self._cancelled.is_set():
                    return
                if isinstance(item, str):
                    yield Delta(index, item, self._named(getattr(item, "records", None)))
                    continue
                choices[index] = self._choice(
                    index, item.text or "", item.finish_reason, len(item.token_ids), item.logprobs
                )
                if index == 0 or not metrics:
                    metrics = item.metrics  # prompt tokens, and the first sequence's TPOT for /metrics
                yield choices[index]
            ended = True
        except Exception:
            if self._cancelled.is_set():  # a cancelled engine handle ends with RequestCancelled: expected
                return
            raise
        finally:
            if not ended:  # cancelled, failed, or abandoned by the reader: free the engine's blocks now
                self._stop_stream()
        if self._cancelled.is_set():
            return
        ordered = [choices[i] for i in sorted(choices)]
        self._outcome = Outcome(ordered, int(metrics.get("prompt_tokens", 0)), metrics.get("tpot_s"))

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


def _one_sequence(stream: Any) -> Iterator[tuple[int, Any]]:
    """A one-sequence stream's text deltas, then its Generation, as (index 0, item) like SequenceStreams.events()."""
    for text in stream:
        yield 0, text
    yield 0, stream.generation


def engine_stats(pipes: list[Pipeline]) -> list[dict[str, Any]]:
    """KV blocks used and prefix hit rate of the generation engines behind `pipes`, for /metrics.

    A loaded text-generation model exposes its engine as `model.engine()` (None when it decodes
    static batches); models without one are left out, so the gauges are omitted.
    """
    out = []
    for pipe in pipes:
        engine = engine_of(pipe)
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
