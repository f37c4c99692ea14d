"""Serving speed over HTTP: `taskhub serve` vs `transformers serve --continuous-batching`, same checkpoint.

A random-weight checkpoint with the SmolLM2-135M shape (fp32) and a word-level tokenizer of its
49152-token vocabulary (every token decodes to one word, so every decoding step is one streamed
delta) is saved to a temporary directory. Each server runs in its own process on 127.0.0.1; the
clients are threads here using the official `openai` package, streaming chat completions
(prompt 32 tokens, greedy, max_tokens new tokens). For 1, 8 and 32 concurrent clients:
requests/s, output tokens/s, TTFT p50/p95 (request sent -> first content chunk) and TPOT p50/p95
(mean gap between later chunks of a request).

HTTP overhead at 1 client: for the same requests, the TPOT the client sees vs the TPOT the server
measures itself (its /metrics histogram, taken where deltas leave the decoder, before SSE encoding
and the socket); overhead = client TPOT / server TPOT - 1 (target <= 5%). Measuring both sides of
the same requests keeps the ratio meaningful even when other processes slow the decoding.

transformers serve needs FastAPI (`pip install "transformers[serving]"`); when it cannot start,
the script says so and reports taskhub alone.

    python benchmarks/serve.py [--clients 1 8 32] [--max-tokens 32] [--requests 2] [--skip-transformers]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB = 49152
PROMPT = " ".join(f"w{i}" for i in range(10, 42))  # 32 tokens
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def build_checkpoint(path: Path) -> Path:
    """SmolLM2-135M shape, random weights, safetensors; a word-level tokenizer over the whole vocabulary."""
    config = LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        vocab_size=VOCAB, max_position_embeddings=8192, rope_theta=100000, tie_word_embeddings=True,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(path, safe_serialization=True)
    vocab = {"<eos>": 0, "<bos>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", bos_token="<bos>", pad_token="<eos>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], url: str, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}; see {log}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"did not start within 600 s; see {log}")


def one_request(client, model: str, max_tokens: int) -> tuple[float, float, int]:
    """(TTFT, TPOT, output chunks) of one streamed chat completion."""
    sent = time.perf_counter()
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, temperature=0, stream=True
    )
    stamps = [time.perf_counter() for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    if not stamps:
        return float("nan"), float("nan"), 0
    tpot = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
    return stamps[0] - sent, tpot, len(stamps)


def load(base_url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=1800)
    results: list[tuple[float, float, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(requests):
            try:
                result = one_request(client, model, max_tokens)
            except Exception as exc:  # counted and reported: a server that fails requests is not fast
                with lock:
                    errors.append(type(exc).__name__)
                continue
            with lock:
                results.append(result)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if not results:
        raise RuntimeError(f"every request failed: {sorted(set(errors))}")
    ttft = sorted(r[0] for r in results)
    tpot = sorted(r[1] for r in results)

    def pct(values: list[float], q: float) -> float:
        return values[min(int(q * len(values)), len(values) - 1)]

    return {
        "req/s": len(results) / wall,
        "tok/s": sum(r[2] for r in results) / wall,
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p95": pct(ttft, 0.95),
        "tpot_p50": pct(tpot, 0.5),
        "tpot_p95": pct(tpot, 0.95),
        "errors": len(errors),
    }


def server_tpot_totals(base: str) -> tuple[float, float]:
    """(sum, count) of taskhub's own TPOT histogram: measured inside the server, before SSE and HTTP."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("taskhub_time_per_output_token_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("taskhub_time_per_output_token_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="1-client overhead: requests measured")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}, torch {torch.__version__}"
    )
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    path = build_checkpoint(work / "smollm2-135m-shape")
    servers = {}
    port = free_port()
    servers["taskhub"] = (
        start(
            [sys.executable, "-m", "taskhub.cli", "serve", "--model", str(path), "--port", str(port), "--max-running", "64", "--max-queue", "256"],
            f"http://127.0.0.1:{port}/health",
            work / "taskhub.log",
        ),
        f"http://127.0.0.1:{port}/v1",
    )  # fmt: skip
    if not args.skip_transformers:
        port = free_port()
        try:
            servers["transformers"] = (
                start(
                    [sys.executable, "-m", "transformers.cli.transformers", "serve", str(path), "--continuous-batching",
                     "--port", str(port), "--host", "127.0.0.1", "--device", "cpu", "--dtype", "float32"],
                    f"http://127.0.0.1:{port}/health",
                    work / "transformers.log",
                ),
                f"http://127.0.0.1:{port}/v1",
            )  # fmt: skip
        except RuntimeError as exc:
            print(f"transformers serve --continuous-batching cannot run here: {exc}")
    try:
        for _, url in servers.values():
            load(url, str(path), 1, 1, 4)  # warm-up
        print(
            f"{'server':<13}{'clients':>8}{'req/s':>8}{'tok/s':>9}{'TTFT p50':>10}{'p95':>8}{'TPOT p50':>10}{'p95':>8}"
        )
        for clients in args.clients:
            for name, (_, url) in servers.items():
                r = load(url, str(path), clients, args.requests, args.max_tokens)
                print(
                    f"{name:<13}{clients:>8}{r['req/s']:>8.2f}{r['tok/s']:>9.1f}{r['ttft_p50'] * 1e3:>8.0f}ms"
                    f"{r['ttft_p95'] * 1e3:>6.0f}ms{r['tpot_p50'] * 1e3:>8.1f}ms{r['tpot_p95'] * 1e3:>6.1f}ms{r['errors']:>7}",
                    flush=True,
                )
        base = servers["taskhub"][1].removesuffix("/v1")
        before = server_tpot_totals(base)
        client_tpots = [
            load(servers["taskhub"][1], str(path), 1, 1, args.max_tokens)["tpot_p50"] for _ in range(args.repeats)
        ]
        after = server_tpot_totals(base)
        inside = (after[0] - before[0]) / (after[1] - before[1])
        seen = statistics.mean(client_tpots)
        print(
            f"1-client TPOT over {args.repeats} requests: seen by the client {seen * 1e3:.2f} ms, inside the server "
            f"{inside * 1e3:.2f} ms, HTTP + SSE overhead {seen / inside - 1:+.1%} of TPOT (target <= 5%)"
        )
        print(f"load after: {os.getloadavg()}")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
