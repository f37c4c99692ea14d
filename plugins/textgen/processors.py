"""Logits processors: each control of GenerationConfig as a function of (token ids so far, scores).

Order (transformers' `_get_logits_processor` order; presence/frequency sit next to
repetition_penalty, their closest transformers relative), after the structured-output mask:

 0. constraint            (constrain.RowConstraints: tokens the request's grammar forbids get -inf,
                          before any penalty or temperature sees them)
 1. logit_bias            (transformers' SequenceBiasLogitsProcessor with one-token sequences)
 2. repetition_penalty    (RepetitionPenaltyLogitsProcessor; left padding is not penalised)
 3. presence_penalty, frequency_penalty  (OpenAI: logit -= frequency*count + presence*(count>0),
                          counting generated tokens only)
 4. no_repeat_ngram_size  (NoRepeatNGramLogitsProcessor; prompt n-grams count, as in transformers)
 5. bad_words_ids         (NoBadWordsLogitsProcessor; a one-token EOS is never banned)
 6. min_new_tokens        (MinNewTokensLengthLogitsProcessor: EOS and stop ids get -inf)
 7. forced_bos_token_id, 8. forced_eos_token_id, 9. suppress_tokens, 10. begin_suppress_tokens
 Sampling only (`do_sample=True`), in this order:
 11. temperature, 12. top_k, 13. top_p, 14. min_p, 15. typical_p

Processors are built once per request and only for the controls that are switched on.
`ids` is always the whole row so far: prompt (left padding included) then generated tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .config import GenerationConfig

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(ids [B, L] int64, scores [B, V] fp32) -> processed scores [B, V]."""

NEG_INF = -math.inf


def logit_bias(bias: dict[int, float], vocab_size: int, device: torch.device) -> Processor:
    """Add a fixed bias to chosen token ids."""
    if any(not 0 <= token < vocab_size for token in bias):
        raise ValueError(f"logit_bias ids must lie in [0, {vocab_size}), got {sorted(bias)}")
    vector = torch.zeros(vocab_size, dtype=torch.float32, device=device)
    vector[list(bias)] = torch.tensor(list(bias.values()), dtype=torch.float32, device=device)

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + vector

    return apply


def repetition_penalty(penalty: float, pad_lens: torch.Tensor | None) -> Processor:
    """Divide positive / multiply negative scores of every token already in the row (CTRL paper)."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        ids = ids.clamp(max=vocab)
        if pad_lens is not None:  # padding points at the spare column, which is dropped below
            positions = torch.arange(ids.shape[1], device=ids.device)
            ids = ids.masked_fill(positions[None, :] < pad_lens[:, None], vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))
        seen = torch.gather(padded, 1, ids)
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        return padded.scatter(1, ids, seen)[:, :vocab]

    return apply


def presence_frequency_penalty(presence: float, frequency: float, prompt_len: int) -> Processor:
    """OpenAI penalties over the generated tokens only."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = ids[:, prompt_len:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - (frequency * counts + presence * (counts > 0).to(scores.dtype))

    return apply


def no_repeat_ngram(size: int) -> Processor:
    """Ban every token that would complete an n-gram already present in the row."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        length = ids.shape[-1]
        if length < size:
            return scores
        prefix = ids[:, length + 1 - size :]  # [B, size-1]
        windows = ids.unfold(dimension=1, size=size, step=1)  # [B, W, size]
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # [B, W]
        vocab = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
        return scores.masked_fill(banned[:, :vocab], NEG_INF)

    return apply


def bad_words(sequences: list[list[int]], eos_ids: list[int], vocab_size: int, device: torch.device) -> Processor:
    """Ban single tokens always and the last token of longer sequences when their prefix ends the row."""
    sequences = [s for s in sequences if not (len(s) == 1 and s[0] in eos_ids)]
    if any(not 0 <= t < vocab_size for s in sequences for t in s):
        raise ValueError(f"bad_words_ids must lie in [0, {vocab_size})")
    single = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    single[[s[0] for s in sequences if len(s) == 1]] = True
    groups: dict[int, list[list[int]]] = {}
    for s in sequences:
        if len(s) > 1:
            groups.setdefault(len(s) - 1, []).append(s)
    multi = [
        (torch.tensor([s[:-1] for s in group], device=device), torch.tensor([s[-1] for s in group], device=device))
        for group in groups.values()
    ]

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.masked_fill(single, NEG_INF)
        for prefixes, last_tokens in multi:  # prefixes [S, P], last_tokens [S]
            if prefixes.shape[1] > ids.shape[1]:
                continue
            matching = (ids[:, None, -prefixes.shape[1] :] == prefixes).all(dim=-1)  # [B, S]
            hits = torch.zeros_like(scores).index_add_(1, last_tokens, matching.to(scores.dtype))
            scores = scores.masked_fill(hits > 0, NEG_INF)
        return scores

    return apply


def min_new_tokens(minimum: int, prompt_len: int, finish_ids: list[int], device: torch.device) -> Processor:
    """Forbid ending the sequence before `minimum` new tokens."""
    finish = torch.tensor(finish_ids, device=device)

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] - prompt_len >= minimum:
            return scores
        return scores.index_fill(1, finish, NEG_INF)

    return apply


def force_token_at(token_id: int, length: int) -> Processor:
    """Force `token_id` when the row is `length` tokens long (forced BOS / forced EOS)."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] != length:
            return scores
        forced = torch.full_like(scores, NEG_INF)
        forced[:, token_id] = 0
        return forced

    return apply


def suppress(tokens: list[int], at_length: int | None, device: torch.device) -> Processor:
    """-inf for `tokens` always, or only when the row is `at_length` long (begin_suppress_tokens)."""
    index = torch.tensor(tokens, device=device)

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if at_length is not None and ids.shape[-1] != at_length:
            return scores
        return scores.index_fill(1, index, NEG_INF)

    return apply


def temperature(value: float) -> Processor:
    """Flatten (>1) or sharpen (<1) the distribution."""
    return lambda ids, scores: scores / value


def top_k(k: int, min_keep: int) -> Processor:
    """Keep the k best tokens."""
    k = max(k, min_keep)

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        kth = torch.topk(scores, min(k, scores.shape[-1]))[0][..., -1, None]
        return scores.masked_fill(scores < kth, NEG_INF)

    return apply


def top_p(p: float, min_keep: int) -> Processor:
    """Keep the smallest set of best tokens whose probability mass reaches p (nucleus)."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - p)
        remove[..., -min_keep:] = False
        return scores.masked_fill(remove.scatter(1, sorted_indices, remove), NEG_INF)

    return apply


def min_p(p: float, min_keep: int) -> Processor:
    """Drop tokens less likely than p times the best token."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)
        remove = probs < p * probs.amax(dim=-1, keepdim=True)
        keep = torch.topk(probs, min(min_keep, probs.shape[-1]), dim=-1).indices
        remove.scatter_(-1, keep, False)
        return scores.masked_fill(remove, NEG_INF)

    return apply


def typical_p(mass: float, min_keep: int) -> Processor:
    """Keep tokens whose surprise is closest to the entropy, up to `mass` (locally typical sampling)."""

    def apply(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        normalized = torch.nn.functional.log_softmax(scores, dim=-1)
        entropy = -(normalized * normalized.exp()).nansum(-1, keepdim=True)
        shifted = torch.abs((-normalized) - entropy)
        sorted_scores, sorted_indices = torch.sort(shifted, descending=False)
        cumulative = scores.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < mass).sum(dim=1).clamp_(max=sorted_scores.shape[-1] - 1)
        remove = sorted_scores > sorted_scores.gather(1, last.view(-1, 1))
        remove[..., :min_keep] = False
        return scores.masked_fill(remove.scatter(1, sorted_indices, remove), NEG_INF)

    return apply


def build_processors(
    config: GenerationConfig,
    *,
    prompt_len: int,
    pad_lens: torch.Tensor | None,
    vocab_size: int,
    device: torch.device,
    min_tokens_to_keep: int = 1,
    constraint: Processor | None = None,
) -> list[Processor]:
    """The enabled processors of one request, in the documented order; `constraint` (a grammar mask) first."""
    procs: list[Processor] = [constraint] if constraint is not None else []
    if config.logit_bias:
        procs.append(logit_bias(config.logit_bias, vocab_size, device))
    if config.repetition_penalty != 1.0:
        procs.append(repetition_penalty(config.repetition_penalty, pad_lens))
    if config.presence_penalty or config.frequency_penalty:
        procs.append(presence_frequency_penalty(config.presence_penalty, config.frequency_penalty, prompt_len))
    if config.no_repeat_ngram_size:
        procs.append(no_repeat_ngram(config.no_repeat_ngram_size))
    if config.bad_words_ids:
        procs.append(bad_words(config.bad_words_ids, config.eos_token_id, vocab_size, device))
    if config.min_new_tokens and config.finish_ids:
        procs.append(min_new_tokens(config.min_new_tokens, prompt_len, config.finish_ids, device))
    if config.forced_bos_token_id is not None:
        procs.append(force_token_at(config.forced_bos_token_id, 1))
    if config.forced_eos_token_id is not None:
        procs.append(force_token_at(config.forced_eos_token_id, prompt_len + config.max_new_tokens - 1))
    if config.suppress_tokens:
        procs.append(suppress(config.suppress_tokens, None, device))
    if config.begin_suppress_tokens:
        begin = prompt_len + (1 if prompt_len == 1 and config.forced_bos_token_id is not None else 0)
        procs.append(suppress(config.begin_suppress_tokens, begin, device))
    if config.sampling:
        if config.temperature != 1.0:
            procs.append(temperature(config.temperature))
        if config.top_k:
            procs.append(top_k(config.top_k, min_tokens_to_keep))
        if config.top_p < 1.0:
            procs.append(top_p(config.top_p, min_tokens_to_keep))
        if config.min_p is not None:
            procs.append(min_p(config.min_p, min_tokens_to_keep))
        if config.typical_p < 1.0:
            procs.append(typical_p(config.typical_p, min_tokens_to_keep))
    return procs


def apply_processors(procs: list[Processor], ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Run the processors in order."""
    for proc in procs:
        scores = proc(ids, scores)
    return scores
