"""Serving speed over HTTP: `taskhub serve` vs `transformers serve --continuous-batching`, same checkpoint.

A random-weight checkpoint with the SmolLM2-135M shape (fp32) and a word-level tokenizer of its
49152-token vocabulary (every token decodes to one word, so every decoding step is one streamed
delta) is saved to a temporary directory. Each server runs in its own process on 127.0.0.1; the
clients are threads here using the official `openai` package, streaming chat completions
(prompt 32 tokens, greedy, max_tokens new tokens). For 1, 8 and 32 concurrent clients:
requests/s, output tokens/s, TTFT p50/p95 (request sent -> first content chunk) and TPOT p50/p95
(mean gap between later chunks of a request).

HTTP overhead at 1 client: for the same requests, the TPOT the client sees vs the TPOT the server
measures itself (its /metrics histograms: where deltas reach the event loop, before SSE encoding and
the socket; and inside the decoder at each step, before the thread hop to the event loop);
overhead = client TPOT / server TPOT - 1 (target <= 5%). Measuring both sides of the same requests
keeps the ratio meaningful even when other processes slow the decoding.

Server cost at many clients: the row "engine alone" runs the same requests in this process through
`taskhub.pipeline` (every client's prompt submitted to the engine at once, per round, no HTTP, no
streaming consumers): the decoder's own ceiling. taskhub's tok/s over it is what the server path keeps.

transformers serve needs FastAPI (`pip install "transformers[serving]"`); when it cannot start,
the script says so and reports taskhub alone. `--threads N` gives every server process (and the
engine-alone row) N torch threads (OMP_NUM_THREADS): on a shared machine 1 thread per process
avoids the spin-waiting that makes multi-threaded torch collapse under foreign load.
`--rounds R` repeats the whole interleaved comparison; every row is printed with the load average.

    python benchmarks/serve.py [--clients 1 8 32] [--max-tokens 32] [--requests 2] [--threads 1] [--rounds 2]
                               [--skip-transformers]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
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


def start(command: list[str], url: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
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


def engine_alone(path: Path, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    """The same requests without the server: per round, every client's prompt submitted to the engine at once."""
    import taskhub

    pipe = taskhub.pipeline("text-generation", str(path))
    messages = [{"role": "user", "content": PROMPT}]
    pipe([messages], max_new_tokens=4, do_sample=False)  # warm-up
    tokens = 0
    began = time.perf_counter()
    for _ in range(requests):
        out = pipe([messages] * clients, max_new_tokens=max_tokens, do_sample=False, return_metrics=True)
        tokens += sum(r[0]["generated_tokens"] for r in out)
    wall = time.perf_counter() - began
    return {"req/s": clients * requests / wall, "tok/s": tokens / wall}


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of each thread of process `pid`, by thread id (Linux /proc)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def cpu_by_role(pid: int, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two snapshots by the engine thread, the event loop and the worker threads.

    Python threads carry no OS name, so `py-spy dump` (pip install py-spy) names them by thread id."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    names = dict(re.findall(r'Thread (\d+) \([^)]*\): "([^"]*)"', dump))
    roles: dict[str, float] = {}
    for tid, seconds in after.items():
        name = names.get(tid, "?")
        role = "workers" if name.startswith("taskhub-serve") else {"MainThread": "event loop"}.get(name, name)
        roles[role] = roles.get(role, 0.0) + seconds - before.get(tid, 0.0)
    return roles


def tpot_totals(base: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of taskhub's TPOT histograms: "loop" where deltas reach the event loop (before SSE and
    HTTP), "decoder" timed by the decoder at each step."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    names = {
        "loop": "taskhub_time_per_output_token_seconds",
        "decoder": "taskhub_decoder_time_per_output_token_seconds",
    }
    out = {}
    for key, name in names.items():
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith(f"{name}_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith(f"{name}_count"):
                count += float(line.rsplit(" ", 1)[1])
        out[key] = (total, count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="1-client overhead: requests measured")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads of every server process (OMP_NUM_THREADS)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the interleaved comparison")
    parser.add_argument(
        "--cpu-by-thread", action="store_true", help="taskhub's CPU seconds by thread at the most clients (py-spy)"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
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
            env,
        ),
        f"http://127.0.0.1:{port}/v1",
    )  # fmt: skip
    if not args.skip_transformers:
        port = free_port()
        try:
            servers["transformers"] = (
                start(
                    [sys.executable, "-m", "transformers.cli.transformers", "serve", str(path), "--continuous-batching",
                     "--port", str(port), "--host", "127.0.0.1", "--device", "cpu", "--dtype", "float32",
                     # a bounded KV cache (8192 tokens, ~380 MB): unbounded, it sizes itself from free memory
                     "--cb-block-size", "32", "--cb-num-blocks", "256"],
                    f"http://127.0.0.1:{port}/health",
                    work / "transformers.log",
                    env,
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
            f"{'errors':>7}  load(1 min)"
        )
        for _ in range(args.rounds):
            for clients in args.clients:
                for name, (process, url) in servers.items():
                    measure_cpu = args.cpu_by_thread and name == "taskhub" and clients == max(args.clients)
                    before = thread_cpu_s(process.pid) if measure_cpu else {}
                    r = load(url, str(path), clients, args.requests, args.max_tokens)
                    roles = cpu_by_role(process.pid, before, thread_cpu_s(process.pid)) if measure_cpu else {}
                    print(
                        f"{name:<13}{clients:>8}{r['req/s']:>8.2f}{r['tok/s']:>9.1f}{r['ttft_p50'] * 1e3:>8.0f}ms"
                        f"{r['ttft_p95'] * 1e3:>6.0f}ms{r['tpot_p50'] * 1e3:>8.1f}ms{r['tpot_p95'] * 1e3:>6.1f}ms"
                        f"{r['errors']:>7}  {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
                    if roles:
                        total = sum(roles.values())
                        shares = ", ".join(
                            f"{k} {v:.2f} s ({v / total:.1%})" for k, v in sorted(roles.items()) if v >= 0.005
                        )
                        print(f"  taskhub CPU by thread over that run: {shares}", flush=True)
                if clients > 1:
                    r = engine_alone(path, clients, args.requests, args.max_tokens)
                    print(
                        f"{'engine alone':<13}{clients:>8}{r['req/s']:>8.2f}{r['tok/s']:>9.1f}{'(no HTTP)':>52}"
                        f"  {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        base = servers["taskhub"][1].removesuffix("/v1")
        before = tpot_totals(base)
        client_tpots = [
            load(servers["taskhub"][1], str(path), 1, 1, args.max_tokens)["tpot_p50"] for _ in range(args.repeats)
        ]
        after = tpot_totals(base)
        inside = {k: (after[k][0] - before[k][0]) / (after[k][1] - before[k][1]) for k in ("loop", "decoder")}
        seen = statistics.mean(client_tpots)
        print(
            f"1-client TPOT over {args.repeats} requests: client {seen * 1e3:.2f} ms, event loop "
            f"{inside['loop'] * 1e3:.2f} ms, decoder {inside['decoder'] * 1e3:.2f} ms; HTTP + SSE "
            f"{seen / inside['loop'] - 1:+.1%}, whole server path (threads, loop, SSE, HTTP) "
            f"{seen / inside['decoder'] - 1:+.1%} of TPOT (target <= 5%)"
        )
        print(f"load after: {os.getloadavg()}")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
