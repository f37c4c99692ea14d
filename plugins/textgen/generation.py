"""What a decoding run returns, and the helpers every decoder (sampling, beam search) shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .backend import PromptBatch
from .config import GenerationConfig
from .stopping import cut_at_stop

LENGTH, EOS, STOP = 0, 1, 2
FINISH_REASONS = ("length", "eos", "stop")


@dataclass
class Generation:
    """One generated sequence."""

    token_ids: list[int]  # generated ids, the terminating EOS / stop id included
    finish_reason: str  # "length" | "eos" | "stop"
    text: str | None = None  # decoded, cut at a stop string, when a tokenizer was given
    logprobs: list[dict] | None = None  # per token: token_id, logprob, top_logprobs
    score: float | None = None  # beam search: length-penalised sum of log-probabilities
    metrics: dict = field(default_factory=dict)
    output_format: Any = None  # the constrain.OutputFormat it was decoded under (results gain parsed / error)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator seeded for this request only, or None for torch's global one."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def prompt_lengths(batch: PromptBatch) -> list[int]:
    """Real (unpadded) prompt tokens per row; the encoder's input for encoder-decoder models."""
    mask = batch.encoder_inputs.get("attention_mask")
    if mask is None:
        mask = batch.attention_mask if not batch.encoder_inputs else None
    if mask is None:
        source = next(iter(batch.encoder_inputs.values()))
        return [int(source.shape[-1])] * source.shape[0]
    return mask.sum(dim=1).tolist()


CONTEXT_TOKENS = 4  # prompt tokens decoded before the output so its first token keeps its spacing


def prompt_context(batch: PromptBatch) -> list[list[int]]:
    """The last few real prompt tokens of every row."""
    return [
        [t for t, m in zip(ids, mask) if m][-CONTEXT_TOKENS:]
        for ids, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist())
    ]


def finish_text(
    tokenizer: Any, ids: list[int], reason: str, config: GenerationConfig, context: Sequence[int] = ()
) -> str:
    """Decoded output: the terminating EOS / stop id dropped unless include_stop, stop strings cut.

    With `context` (the prompt's last tokens) the output is decoded after them and the
    prompt's text removed, as transformers' text-generation pipeline does: tokenizers that
    drop the leading space of a first token then keep it.
    """
    if reason != "length" and ids and ids[-1] in config.finish_ids and not config.include_stop:
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if context:
        head = tokenizer.decode(list(context), skip_special_tokens=True)
        full = tokenizer.decode([*context, *ids], skip_special_tokens=True)
        text = full[len(head) :] if full.startswith(head) else text
    return cut_at_stop(text, config.stop, config.include_stop)[0] if config.stop else text
