"""Streaming n > 1 choices over HTTP: how soon every choice shows text, against the whole reply's time.

Same checkpoint and server as benchmarks/serve.py (SmolLM2-135M shape, random weights, word-level
tokenizer so every decoding step is one delta; `taskhub serve` in its own process). One client,
official `openai` package, chat with `n` choices, seeded sampling, `max_tokens` new tokens per choice.
Each round sends the same request streamed and not streamed, interleaved, and reports medians of:

- first chunk, every choice: request sent -> each of the n choices has sent a content chunk (the
  slowest of them). Before n > 1 streamed token by token, a streamed n > 1 request showed nothing
  until the whole reply was decoded, so this used to equal the whole reply's time.
- streamed total: request sent -> the last chunk; non-streamed total: the whole reply.
- chunks per choice, and whether each choice's streamed deltas join to the non-streamed text.

    python benchmarks/serve_n_stream.py [--n 4] [--max-tokens 32] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve import PROMPT, build_checkpoint, free_port, start  # noqa: E402  (the shared server setup)


def streamed(client, model: str, n: int, max_tokens: int, seed: int) -> tuple[float, float, list[str]]:
    """(time until every choice has sent text, time until the last chunk, each choice's joined text)."""
    sent = time.perf_counter()
    first: dict[int, float] = {}
    texts = [""] * n
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, n=n, temperature=1.0,
        seed=seed, stream=True,
    ):  # fmt: skip
        for choice in chunk.choices:
            if choice.delta.content:
                first.setdefault(choice.index, time.perf_counter())
                texts[choice.index] += choice.delta.content
    end = time.perf_counter()
    return max(first.values()) - sent if len(first) == n else float("nan"), end - sent, texts


def whole(client, model: str, n: int, max_tokens: int, seed: int) -> tuple[float, list[str]]:
    sent = time.perf_counter()
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, n=n, temperature=1.0,
        seed=seed,
    )  # fmt: skip
    return time.perf_counter() - sent, [c.message.content or "" for c in reply.choices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads of the server process (OMP_NUM_THREADS)")
    args = parser.parse_args()
    import openai

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}, torch {torch.__version__}")
    work = Path(tempfile.mkdtemp(prefix="serve-n-bench-"))
    path = str(build_checkpoint(work / "smollm2-135m-shape"))
    port = free_port()
    server = start(
        [sys.executable, "-m", "taskhub.cli", "serve", "--model", path, "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
        work / "taskhub.log",
        env,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=1800)
        whole(client, path, args.n, 4, 0)  # warm-up
        firsts, stream_totals, whole_totals, equal = [], [], [], 0
        for seed in range(1, args.rounds + 1):
            first, total, texts = streamed(client, path, args.n, args.max_tokens, seed)
            whole_s, expected = whole(client, path, args.n, args.max_tokens, seed)
            firsts.append(first)
            stream_totals.append(total)
            whole_totals.append(whole_s)
            equal += texts == expected
        first, total, reply = (statistics.median(v) for v in (firsts, stream_totals, whole_totals))
        print(
            f"n={args.n}, max_tokens={args.max_tokens}, {args.rounds} rounds (medians): first chunk of every choice "
            f"{first * 1e3:.0f} ms, streamed total {total * 1e3:.0f} ms, non-streamed reply {reply * 1e3:.0f} ms; "
            f"every choice shows text after {first / reply:.1%} of the whole reply's time; "
            f"streamed = non-streamed text in {equal}/{args.rounds} rounds"
        )
        print(f"load after: {os.getloadavg()}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
