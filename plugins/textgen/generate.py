"""Decoding over any LogitsBackend: prefill, pick a token, decode one more, until every row stops."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from .backend import LogitsBackend, PromptBatch
from .beam_search import beam_search
from .config import GenerationConfig
from .constrain import constraint_for
from .generation import (
    EOS,
    FINISH_REASONS,
    LENGTH,
    STOP,
    Generation,
    finish_text,
    make_generator,
    prompt_context,
    prompt_lengths,
)
from .metrics import MetricsClock
from .processors import apply_processors, build_processors
from .stopping import TextStream


def sample(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] processed scores -> [B] next ids: argmax, or a draw from softmax(scores)."""
    if not do_sample:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


class LogprobRecorder:
    """Log-probabilities of chosen tokens and the top-N alternatives.

    They are the log_softmax of the scores the token was picked from: after every enabled
    processor, warpers (temperature, top-k, ...) included when sampling.
    """

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n
        self.chosen: list[torch.Tensor] = []
        self.top_ids: list[torch.Tensor] = []
        self.top_values: list[torch.Tensor] = []

    def record(self, scores: torch.Tensor, next_ids: torch.Tensor) -> None:
        """Remember step logprobs of every row."""
        logprobs = torch.log_softmax(scores, dim=-1)
        self.chosen.append(logprobs.gather(1, next_ids[:, None])[:, 0])
        if self.top_n:
            values, ids = logprobs.topk(self.top_n, dim=-1)
            self.top_values.append(values)
            self.top_ids.append(ids)

    def rows(self, ids: torch.Tensor, rows: list[int]) -> list[list[dict]]:
        """Per row of `rows`, per step: {token_id, logprob, top_logprobs}; `ids` [len(rows), steps] chosen ids."""
        if not self.chosen:
            return [[] for _ in range(ids.shape[0])]
        chosen = torch.stack(self.chosen, dim=1)[rows].tolist()  # [len(rows), steps]
        top_ids = torch.stack(self.top_ids, dim=1)[rows].tolist() if self.top_n else None  # [len(rows), steps, N]
        top_values = torch.stack(self.top_values, dim=1)[rows].tolist() if self.top_n else None
        return [
            [
                _record(token, chosen[b][t], top_ids[b][t] if top_ids else [], top_values[b][t] if top_values else [])
                for t, token in enumerate(row)
            ]
            for b, row in enumerate(ids.tolist())
        ]

    def last_step(self, ids: list[int]) -> list[dict]:
        """Per row, the record of the step just recorded (`ids` [B] its chosen ids): streams hand them
        out with their text, and they equal what `rows()` gives for that step."""
        chosen = self.chosen[-1].tolist()
        top_ids = self.top_ids[-1].tolist() if self.top_n else None
        top_values = self.top_values[-1].tolist() if self.top_n else None
        return [
            _record(token, chosen[b], top_ids[b] if top_ids else [], top_values[b] if top_values else [])
            for b, token in enumerate(ids)
        ]


def _record(token: int, logprob: float, top_ids: list[int], top_values: list[float]) -> dict:
    return {
        "token_id": token,
        "logprob": logprob,
        "top_logprobs": [{"token_id": i, "logprob": v} for i, v in zip(top_ids, top_values)],
    }


class SamplingRun:
    """Greedy or sampled decoding of one request; iterate for each step's [B] token ids.

    Rows that have finished keep receiving the pad id (transformers does the same), so the
    backend always sees a full batch. After iteration, `results()` gives the sequences.
    With `stream_text=True` (or stop strings) each row has a TextStream whose `take()`
    returns text deltas that a stop string can no longer remove; with logprobs too, each delta
    carries the logprob records of its tokens (a TextDelta).
    """

    def __init__(
        self,
        backend: LogitsBackend | None,
        batch: PromptBatch,
        config: GenerationConfig,
        tokenizer: Any = None,
        stream_text: bool = False,
        vocab_size: int | None = None,
    ) -> None:
        if config.stop and tokenizer is None:
            raise ValueError("stop strings need a tokenizer")
        self.backend, self.config, self.tokenizer = backend, config, tokenizer
        self.batch = batch.repeat_interleave(config.num_return_sequences)
        ids = self.batch.input_ids
        self.device = ids.device
        rows, self.prompt_len = ids.shape
        self.tokens = torch.empty((rows, self.prompt_len + config.max_new_tokens), dtype=torch.long, device=self.device)
        self.tokens[:, : self.prompt_len] = ids
        mask = self.batch.attention_mask
        pad_lens = None if bool(mask.all()) else (mask != 0).int().argmax(dim=1)
        finish = config.finish_ids
        vocab = backend.vocab_size if backend is not None else vocab_size
        self.constraint = constraint_for(config, tokenizer, rows, vocab, finish)
        self.processors = build_processors(
            config,
            prompt_len=self.prompt_len,
            pad_lens=pad_lens,
            vocab_size=vocab,
            device=self.device,
            constraint=self.constraint,
        )
        self.finish_ids = torch.tensor(finish, device=self.device) if finish else None
        self.eos_ids = torch.tensor(config.eos_token_id, device=self.device) if config.eos_token_id else None
        pad = config.pad_token_id if config.pad_token_id is not None else (finish[0] if finish else 0)
        self.pad = torch.tensor(pad, device=self.device)
        self.generator = make_generator(config.seed, self.device)
        self.logprobs = LogprobRecorder(config.logprobs) if config.logprobs is not None else None
        self.context = prompt_context(self.batch) if tokenizer is not None else []
        self.streams = (
            [TextStream(tokenizer, config.stop, config.include_stop, context) for context in self.context]
            if tokenizer is not None and (stream_text or config.stop)
            else None
        )
        self.stream_logprobs = stream_text and self.logprobs is not None and self.streams is not None
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=self.device)
        self.lengths = torch.full((rows,), config.max_new_tokens, dtype=torch.long, device=self.device)
        self.reasons = torch.full((rows,), LENGTH, dtype=torch.long, device=self.device)
        self.steps = 0
        self.clock: MetricsClock | None = None

    @torch.inference_mode()  # also when a stream is read after the stage that made it returned
    def __iter__(self) -> Iterator[torch.Tensor]:
        assert self.backend is not None, "a run without a backend is driven by choose()"
        self.clock = MetricsClock(self.device)
        if self.config.max_new_tokens == 0:
            return
        logits = self.backend.prefill(self.batch, self.config.max_new_tokens)
        while True:
            next_ids = self.choose(logits)
            yield next_ids
            if self.finished:
                break
            logits = self.backend.decode(next_ids)
        self.finish_streams()

    @property
    def finished(self) -> bool:
        """Every row has stopped, or max_new_tokens are generated."""
        return self.steps == self.config.max_new_tokens or not bool(self.unfinished.any())

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """One step: [B, V] next-token logits of every row -> [B] chosen ids (pad for finished rows).

        The generation engine calls this with each request's rows of a shared batch, so a
        request consumes its processors and seeded generator exactly as when it runs alone.
        """
        scores = apply_processors(self.processors, self.tokens[:, : self.prompt_len + self.steps], logits)
        next_ids = sample(scores, self.config.sampling, self.generator)
        if self.logprobs is not None:
            self.logprobs.record(scores, next_ids)
        return self.accept(next_ids)

    @property
    def argmax_only(self) -> bool:
        """Whether choose() picks each row's argmax of the raw logits (greedy, no processor, no logprobs): the
        engine then takes the argmax of all such requests' rows in one call and hands them to accept()."""
        return not self.config.sampling and not self.processors and self.logprobs is None

    def accept(self, next_ids: torch.Tensor) -> torch.Tensor:
        """The rest of a step once next_ids [B] are picked: append them, mark finished rows; the ids kept."""
        assert self.clock is not None, "set the clock before the first step"
        step = self.steps
        if self.finish_ids is not None or self.streams is not None or self.constraint is not None:
            next_ids = torch.where(self.unfinished, next_ids, self.pad)
        if self.constraint is not None:
            self.constraint.advance(next_ids, self.unfinished)
        self.tokens[:, self.prompt_len + step] = next_ids
        self.steps = step + 1
        self._mark_finished(next_ids, step)
        self.clock.tick()
        return next_ids

    def finish_streams(self) -> None:
        """Generation ended: release the text the streams still hold."""
        if self.streams is not None:
            for stream in self.streams:
                stream.finish()

    def _mark_finished(self, next_ids: torch.Tensor, step: int) -> None:
        """Update unfinished / lengths / reasons after `next_ids` was appended at `step`."""
        done = None
        if self.finish_ids is not None:
            done = self.unfinished & torch.isin(next_ids, self.finish_ids)
            if self.eos_ids is None:
                reason = torch.full_like(self.reasons, STOP)
            else:
                reason = torch.where(torch.isin(next_ids, self.eos_ids), EOS, STOP)
            self.reasons = torch.where(done, reason, self.reasons)
        if self.streams is not None:
            active = self.unfinished if done is None else self.unfinished & ~done
            stopped = []
            records = self.logprobs.last_step(next_ids.tolist()) if self.stream_logprobs and self.logprobs else None
            for row, token in zip(active.nonzero()[:, 0].tolist(), next_ids[active].tolist()):
                self.streams[row].push(token, records[row] if records is not None else None)
                if self.streams[row].stopped:
                    stopped.append(row)
            if stopped:
                by_string = torch.zeros_like(self.unfinished)
                by_string[stopped] = True
                self.reasons = torch.where(by_string, STOP, self.reasons)
                done = by_string if done is None else done | by_string
        if self.constraint is not None:  # grammar complete: only EOS could follow, so end as if it had
            complete = torch.tensor(self.constraint.completed(), device=self.device) & self.unfinished
            if done is not None:
                complete &= ~done
            self.reasons = torch.where(complete, EOS, self.reasons)
            done = complete if done is None else done | complete
        if done is not None:
            self.lengths = torch.where(done, step + 1, self.lengths)
            self.unfinished &= ~done

    def results(self) -> list[Generation]:
        """The sequences of every row (prompt-major, num_return_sequences per prompt)."""
        return self._generations(list(range(self.tokens.shape[0])))

    def result(self, row: int) -> Generation:
        """One row's sequence: final once that row has finished, so the engine can hand it out while
        the request's other rows still decode."""
        return self._generations([row])[0]

    def _generations(self, rows: list[int]) -> list[Generation]:
        assert self.clock is not None, "iterate the run first"
        lengths = torch.minimum(self.lengths, torch.tensor(self.steps))[rows].tolist()
        reasons = [FINISH_REASONS[r] for r in self.reasons[rows].tolist()]
        generated = self.tokens[rows, self.prompt_len : self.prompt_len + self.steps]
        logprobs = self.logprobs.rows(generated, rows) if self.logprobs is not None else None
        prompts = prompt_lengths(self.batch)
        peak = self.clock.peak_memory_bytes()
        out = []
        for i, (b, ids, n, reason) in enumerate(zip(rows, generated.tolist(), lengths, reasons)):
            ids = ids[:n]
            out.append(
                Generation(
                    token_ids=ids,
                    finish_reason=reason,
                    text=finish_text(self.tokenizer, ids, reason, self.config, self.context[b])
                    if self.tokenizer
                    else None,
                    logprobs=logprobs[i][:n] if logprobs is not None else None,
                    metrics=self.clock.row_metrics(prompts[b], n, reason, peak),
                )
            )
        return out


def generate(
    backend: LogitsBackend, batch: PromptBatch, config: GenerationConfig, tokenizer: Any = None
) -> list[list[Generation]]:
    """Decode every prompt of `batch`; per prompt its num_return_sequences sequences, best first."""
    if config.num_beams > 1:
        flat = beam_search(backend, batch, config, tokenizer)
    else:
        run = SamplingRun(backend, batch, config, tokenizer)
        for _ in run:
            pass
        flat = run.results()
    n = config.num_return_sequences
    return [flat[i : i + n] for i in range(0, len(flat), n)]


class RowStream:
    """Text deltas of one row of a streamed batch; its Generation once exhausted.

    Rows of one batch share a decode loop: pulling from any row advances all of them and
    queues the other rows' text until they are read.
    """

    def __init__(self, shared: _BatchStream, row: int) -> None:
        self._shared, self._row = shared, row

    def __iter__(self) -> RowStream:
        return self

    def __next__(self) -> str:
        queue = self._shared.queues[self._row]
        while not queue and not self._shared.done:
            self._shared.advance()
        if queue:
            return queue.popleft()
        raise StopIteration

    @property
    def generation(self) -> Generation | None:
        """The finished sequence (finish_reason, metrics, ...), None while still streaming."""
        results = self._shared.results
        return results[self._row] if results is not None else None


class RowGroup:
    """The num_return_sequences rows of one prompt of a streamed batch, read like one engine request
    (a SequenceStreams wraps it): `indexed()` gives (index, text delta) as decoded, then each row's
    Generation once the batch has finished. A static batch holds no shared cache to free: it simply
    stops when nobody pulls it, so cancel() has nothing to do."""

    def __init__(self, shared: _BatchStream, start: int, n: int) -> None:
        self._shared, self._rows = shared, range(start, start + n)
        self._items: Iterator[tuple[int, str | Generation]] | None = None

    def indexed(self) -> Iterator[tuple[int, str | Generation]]:
        if self._items is None:
            self._items = self._read()
        return self._items

    def _read(self) -> Iterator[tuple[int, str | Generation]]:
        shared = self._shared
        while True:
            for index, row in enumerate(self._rows):
                while shared.queues[row]:
                    yield index, shared.queues[row].popleft()
            if shared.done:
                break
            shared.advance()
        for index, generation in enumerate(self.result()):
            yield index, generation

    @property
    def generations(self) -> list[Generation] | None:
        """The rows' finished sequences; None while the batch decodes."""
        results = self._shared.results
        return [results[row] for row in self._rows] if results is not None else None

    def result(self) -> list[Generation]:
        """The rows' sequences; decodes the rest of the batch first."""
        while not self._shared.done:
            self._shared.advance()
        generations = self.generations
        assert generations is not None
        return generations

    def cancel(self) -> None:
        """Nothing to free: the batch is no longer advanced once nobody reads it."""

    def close(self) -> None:
        """Nothing to free (see cancel)."""


class _BatchStream:
    """The decode loop behind the RowStreams (or RowGroups) of one batch."""

    def __init__(self, backend: LogitsBackend, batch: PromptBatch, config: GenerationConfig, tokenizer: Any) -> None:
        self.args = (backend, batch, config, tokenizer)
        self.run = SamplingRun(backend, batch, config, tokenizer, stream_text=True) if config.num_beams == 1 else None
        self.steps = iter(self.run) if self.run is not None else None
        rows = batch.input_ids.shape[0] * config.num_return_sequences
        self.queues: list[deque[str]] = [deque() for _ in range(rows)]
        self.results: list[Generation] | None = None
        self.done = False

    def advance(self) -> None:
        """One decoding step (beam search: the whole search) and queue the new text."""
        if self.run is None or self.steps is None:
            self.results = [g for gens in generate(*self.args) for g in gens]
            texts = [g.text or "" for g in self.results]
            self.done = True
        else:
            try:
                next(self.steps)
            except StopIteration:
                self.results, self.done = self.run.results(), True
            assert self.run.streams is not None
            texts = [stream.take() for stream in self.run.streams]
        for queue, text in zip(self.queues, texts):
            if text:
                queue.append(text)


def stream(backend: LogitsBackend, batch: PromptBatch, config: GenerationConfig, tokenizer: Any) -> list[RowStream]:
    """One text-delta iterator per row (prompt-major, num_return_sequences per prompt).

    Deltas are final: never half a character, never text a stop string removes later;
    joined they equal the non-streamed text. Beam search yields its result once, at the end.
    """
    shared = _BatchStream(backend, batch, config, tokenizer)
    return [RowStream(shared, row) for row in range(len(shared.queues))]


def stream_groups(
    backend: LogitsBackend, batch: PromptBatch, config: GenerationConfig, tokenizer: Any
) -> list[RowGroup]:
    """Per prompt, its num_return_sequences rows as one RowGroup, every row streamed as `stream()` does."""
    shared = _BatchStream(backend, batch, config, tokenizer)
    n = config.num_return_sequences
    return [RowGroup(shared, start, n) for start in range(0, len(shared.queues), n)]
