"""Beam search with transformers' semantics (num_beams, length_penalty, early_stopping, beam sampling).

This follows transformers' vectorised `_beam_search` step by step: per prompt, keep the
best `K = max(2, 1 + #finish ids) * num_beams` continuations of all beams; candidates that
hit a stop condition compete (length-penalised) for the `num_beams` finished slots, the
best unfinished ones keep running; the search ends when no running beam can beat the
worst finished one (heuristics picked by `early_stopping`), when every finished slot is
full and `early_stopping=True`, or when max_new_tokens is reached.
"""

from __future__ import annotations

from typing import Any

import torch

from .backend import LogitsBackend, PromptBatch
from .config import GenerationConfig
from .constrain import RowConstraints, constraint_for
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
from .stopping import tail_has_stop

NEG = -1.0e9


def _gather(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tensor [B, beams, ...] rows picked by indices [B, k] -> [B, k, ...]."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def _improvement_possible(
    still: torch.Tensor,
    running_scores: torch.Tensor,
    beam_scores: torch.Tensor,
    finished: torch.Tensor,
    generated: int,
    max_new_tokens: int,
    config: GenerationConfig,
) -> torch.Tensor:
    """[B, 1]: can the best running beam still beat the worst finished one?"""
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        best_length = max_new_tokens
    else:
        best_length = generated
    best_running = running_scores[:, :1] / (best_length**config.length_penalty)
    worst_finished = torch.where(finished, torch.min(beam_scores, dim=1, keepdim=True)[0], NEG)
    return still & torch.any(best_running > worst_finished, dim=-1, keepdim=True)


class _BeamState:
    """Running and finished beams of every prompt, as transformers keeps them."""

    def __init__(self, prompt: torch.Tensor, num_beams: int, max_new_tokens: int, fill: int) -> None:
        batch, prompt_len = prompt.shape[0] // num_beams, prompt.shape[1]
        device = prompt.device
        self.running = torch.full(
            (batch, num_beams, prompt_len + max_new_tokens), fill, dtype=torch.long, device=device
        )
        self.running[:, :, :prompt_len] = prompt.view(batch, num_beams, prompt_len)
        self.sequences = self.running.clone()
        self.running_scores = torch.zeros((batch, num_beams), device=device)
        self.running_scores[:, 1:] = NEG  # only the first copy of each prompt expands at step one
        self.scores = torch.full((batch, num_beams), NEG, device=device)
        self.finished = torch.zeros((batch, num_beams), dtype=torch.bool, device=device)
        self.still = torch.ones((batch, 1), dtype=torch.bool, device=device)
        self.running_origin = torch.full((batch, num_beams, max_new_tokens), -1, dtype=torch.long, device=device)
        self.origin = self.running_origin.clone()


@torch.inference_mode()
def beam_search(
    backend: LogitsBackend, batch: PromptBatch, config: GenerationConfig, tokenizer: Any = None
) -> list[Generation]:
    """Beam search over every prompt; num_return_sequences best sequences per prompt, prompt-major."""
    if config.logprobs is not None:
        raise ValueError("logprobs are not available with beam search")
    if config.stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer")
    nb, max_new = config.num_beams, config.max_new_tokens
    expanded = batch.repeat_interleave(nb)
    prompt = expanded.input_ids
    batch_size, prompt_len, device = batch.input_ids.shape[0], prompt.shape[1], prompt.device
    finish = config.finish_ids
    keep = max(2, 1 + len(finish)) * nb
    top_nb = torch.arange(keep, device=device) < nb
    finish_ids = torch.tensor(finish, device=device) if finish else None
    mask = expanded.attention_mask
    constraint = constraint_for(config, tokenizer, batch_size * nb, backend.vocab_size, finish)
    processors = build_processors(
        config,
        prompt_len=prompt_len,
        pad_lens=None if bool(mask.all()) else (mask != 0).int().argmax(dim=1),
        vocab_size=backend.vocab_size,
        device=device,
        min_tokens_to_keep=len(finish) + 1 if finish else 2,
        constraint=constraint,
    )
    generator = make_generator(config.seed, device)
    fill = config.pad_token_id if config.pad_token_id is not None else (finish[0] if finish else 0)
    s = _BeamState(prompt, nb, max_new, fill)
    batch_offset = torch.arange(batch_size, device=device).view(-1, 1) * nb
    clock = MetricsClock(device)
    logits = backend.prefill(expanded, max_new) if max_new else None
    cur = prompt_len
    while logits is not None:
        # a. scores of every continuation of every beam, [B, nb * V]
        log_probs = torch.log_softmax(logits, dim=-1)
        log_probs = apply_processors(processors, s.running[:, :, :cur].reshape(batch_size * nb, cur), log_probs)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(batch_size, nb, vocab) + s.running_scores[:, :, None]).view(batch_size, -1)
        # b. top-K continuations (or K sampled without replacement)
        if config.sampling:
            top_idx = torch.multinomial(torch.softmax(log_probs, dim=-1), keep, generator=generator)
            top_lp, order = torch.gather(log_probs, 1, top_idx).sort(dim=-1, descending=True)
            top_idx = top_idx.gather(-1, order)
        else:
            top_lp, top_idx = torch.topk(log_probs, k=keep)
        top_beam = top_idx // vocab
        top_seq = _gather(s.running, top_beam)
        top_seq[:, :, cur] = top_idx % vocab
        top_origin = _gather(s.running_origin, top_beam)
        top_origin[:, :, cur - prompt_len] = top_beam + batch_offset
        # c. which candidates stop here
        if cur + 1 >= prompt_len + max_new:
            hits = torch.ones_like(top_lp, dtype=torch.bool)
        else:
            hits = (
                torch.isin(top_seq[:, :, cur], finish_ids)
                if finish_ids is not None
                else torch.zeros_like(top_lp, dtype=torch.bool)
            )
            if config.stop:
                hits = hits | _stop_string_hits(tokenizer, top_seq[:, :, prompt_len : cur + 1], config.stop)
            if constraint is not None:
                hits = hits | _grammar_hits(constraint, top_beam + batch_offset, top_seq[:, :, cur], top_lp)
        # d. best unfinished candidates keep running
        running_lp = top_lp + hits.to(torch.float32) * NEG
        next_idx = torch.topk(running_lp, k=nb)[1]
        s.running = _gather(top_seq, next_idx)
        s.running_scores = _gather(running_lp, next_idx)
        s.running_origin = _gather(top_origin, next_idx)
        # e. finished candidates enter the finished slots if they beat them
        _update_finished(s, top_seq, top_lp, top_origin, hits & top_nb[None, :], cur + 1 - prompt_len, config)
        beam_idx = s.running_origin[:, :, cur - prompt_len].reshape(-1)
        cur += 1
        clock.tick()
        s.still = _improvement_possible(
            s.still, s.running_scores, s.scores, s.finished, cur - prompt_len, max_new, config
        )
        open_beams = not (bool(s.finished.all()) and config.early_stopping is True)
        if not (bool(s.still.any()) and open_beams and not bool(hits.all())):
            break
        backend.reorder_cache(beam_idx)
        if constraint is not None:  # each running beam continues its origin's grammar state
            constraint.reorder(beam_idx.tolist())
            constraint.advance(s.running[:, :, cur - 1].reshape(-1))
        logits = backend.decode(s.running[:, :, cur - 1].reshape(-1))
    return _results(s, config, tokenizer, batch, prompt_len, clock, constraint)


def _grammar_hits(
    constraint: RowConstraints, origins: torch.Tensor, tokens: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """[B, K] candidates (origin row, token) -> [B, K] whether the token completes the origin's grammar."""
    live = torch.isfinite(scores).reshape(-1).tolist()
    pairs = list(zip(origins.reshape(-1).tolist(), tokens.reshape(-1).tolist()))
    done = constraint.completes(
        [o for (o, _), ok in zip(pairs, live) if ok], [t for (_, t), ok in zip(pairs, live) if ok]
    )
    flags = iter(done)
    hits = [next(flags) if ok else False for ok in live]
    return torch.tensor(hits, device=tokens.device).view(tokens.shape)


def _stop_string_hits(tokenizer: Any, generated: torch.Tensor, stops: list[str]) -> torch.Tensor:
    """[B, K, T] candidate tokens -> [B, K] whether each just completed a stop string."""
    rows = generated.reshape(-1, generated.shape[-1]).tolist()
    hits = [tail_has_stop(tokenizer, row, stops) for row in rows]
    return torch.tensor(hits, device=generated.device).view(generated.shape[:2])


def _update_finished(
    s: _BeamState,
    top_seq: torch.Tensor,
    top_lp: torch.Tensor,
    top_origin: torch.Tensor,
    just_finished: torch.Tensor,
    length: int,
    config: GenerationConfig,
) -> None:
    """Merge newly finished candidates into the finished slots, keeping the best num_beams."""
    scores = top_lp / (length**config.length_penalty)
    full = torch.all(s.finished, dim=-1, keepdim=True) & (config.early_stopping is True)
    scores = scores + full.to(torch.float32) * NEG
    scores = scores + (~s.still).to(torch.float32) * NEG
    scores = scores + (~just_finished) * NEG
    merged_scores = torch.cat((s.scores, scores), dim=1)
    best = torch.topk(merged_scores, k=s.scores.shape[1])[1]
    s.sequences = _gather(torch.cat((s.sequences, top_seq), dim=1), best)
    s.scores = _gather(merged_scores, best)
    s.origin = _gather(torch.cat((s.origin, top_origin), dim=1), best)
    s.finished = _gather(torch.cat((s.finished, just_finished), dim=1), best)


def _results(
    s: _BeamState,
    config: GenerationConfig,
    tokenizer: Any,
    batch: PromptBatch,
    prompt_len: int,
    clock: MetricsClock,
    constraint: RowConstraints | None = None,
) -> list[Generation]:
    n = config.num_return_sequences
    sequences = s.sequences[:, :n].reshape(-1, s.sequences.shape[-1])[:, prompt_len:].tolist()
    lengths = (s.origin[:, :n] >= 0).sum(dim=-1).reshape(-1).tolist()
    scores = s.scores[:, :n].reshape(-1).tolist()
    prompts = [p for p in prompt_lengths(batch) for _ in range(n)]
    contexts = [c for c in prompt_context(batch) for _ in range(n)]
    peak = clock.peak_memory_bytes()
    out = []
    for row, length, score, prompt_tokens, context in zip(sequences, lengths, scores, prompts, contexts):
        ids = row[:length]
        reason = FINISH_REASONS[_reason(ids, config, tokenizer, constraint)]
        out.append(
            Generation(
                token_ids=ids,
                finish_reason=reason,
                text=finish_text(tokenizer, ids, reason, config, context) if tokenizer is not None else None,
                score=score,
                metrics=clock.row_metrics(prompt_tokens, length, reason, peak),
            )
        )
    return out


def _reason(ids: list[int], config: GenerationConfig, tokenizer: Any, constraint: RowConstraints | None) -> int:
    """Why a finished beam ended: its last token, a stop string at its end, a complete grammar
    (as EOS: nothing else could follow), or the length limit."""
    if ids and ids[-1] in config.eos_token_id:
        return EOS
    if ids and ids[-1] in config.stop_token_ids:
        return STOP
    if config.stop and ids and tail_has_stop(tokenizer, ids, config.stop):
        return STOP
    if constraint is not None and constraint.complete_sequence(ids):
        return EOS
    return LENGTH
