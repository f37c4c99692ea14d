"""Calibration for int8 text encoders: the largest input each linear layer sees on a fixed set of sentences.

SmoothQuant's per-channel factors (taskhub.cpu_kernels.smoothing_factors) need each linear's input range per
channel. These sentences are shipped with the plugin (no dataset at load time) and differ on purpose from the
sample texts the benchmarks and tests embed: mixed topics, questions, numbers, punctuation, short and long.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning models turn text into vectors that capture its meaning.",
    "In 1969, astronauts landed on the Moon and walked on its dusty surface for hours.",
    "Please send the quarterly report to finance by Friday; the numbers for March are still missing!",
    "How do I reset my password if I no longer have access to the email account?",
    "The recipe calls for two cups of flour, a pinch of salt, and three eggs beaten until fluffy.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates again.",
    "She played the violin at the concert, and the audience gave a standing ovation.",
    "Hi",
    "",
)


def linear_input_maxima(model: nn.Module, tokenizer: Any, max_length: int) -> dict[nn.Linear, torch.Tensor]:
    """Each nn.Linear of `model` -> the largest |input| per input channel over SENTENCES, [in].

    Runs the float model itself, one sentence at a time (no padding rows in the maxima)."""
    maxima: dict[nn.Linear, torch.Tensor] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        largest = inputs[0].detach().abs().flatten(0, -2).amax(dim=0).float()
        maxima[module] = torch.maximum(maxima[module], largest) if module in maxima else largest

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hooks = [m.register_forward_pre_hook(record) for m in linears]
    try:
        with torch.inference_mode():
            for sentence in SENTENCES:
                model(**tokenizer(sentence, truncation=True, max_length=max_length, return_tensors="pt"))
    finally:
        for hook in hooks:
            hook.remove()
    return maxima
