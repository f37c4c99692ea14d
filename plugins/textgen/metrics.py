"""Serving metrics of one request: time to first token, time per output token, throughput, memory."""

from __future__ import annotations

import resource
import sys
import time

import torch


class MetricsClock:
    """Timestamps of the prefill and every decoding step of one request."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.start = time.perf_counter()
        self.steps: list[float] = []

    def tick(self) -> None:
        """A token has been chosen for every row."""
        self.steps.append(time.perf_counter())

    def peak_memory_bytes(self) -> int:
        """Peak accelerator memory of this request on CUDA; on CPU the process's peak resident set."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)

    def row_metrics(self, prompt_tokens: int, generated_tokens: int, finish_reason: str, peak: int) -> dict:
        """The metrics of a row that produced `generated_tokens` tokens (its last at step generated_tokens)."""
        ttft = self.steps[0] - self.start if self.steps else 0.0
        end = self.steps[max(generated_tokens, 1) - 1] if self.steps else self.start
        tpot = (end - self.steps[0]) / (generated_tokens - 1) if generated_tokens > 1 else 0.0
        elapsed = end - self.start
        return {
            "prompt_tokens": prompt_tokens,
            "generated_tokens": generated_tokens,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "tokens_per_s": generated_tokens / elapsed if elapsed > 0 else 0.0,
            "peak_memory_bytes": peak,
            "finish_reason": finish_reason,
        }
