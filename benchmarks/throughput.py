"""Serving throughput: taskhub's engine vs static batches vs transformers generate() and generate_batch().

Workload (as issue 10 describes it): 128 requests, prompt lengths drawn log-normally in
16-1024 tokens (median ~100), max_new_tokens uniform in 16-256, EOS disabled so every request
runs its full length; random weights of the SmolLM2-135M and GPT-2-124M shapes (GPT-2 with
2048 positions so prompt + output fits), fp32 CPU. A second workload puts one shared
512-token prefix before every prompt. `--quick` shrinks it (32 requests, prompts 16-256,
max_new_tokens 8-64, a 128-token prefix) for a fast comparison on a busy machine.

Contenders, each in its own process (so peak RSS is its own), one after the other:
  engine           taskhub's continuous-batching engine, all requests submitted at t=0
  engine-noprefix  the same with prefix caching off (shared-prefix workload only)
  static           today's taskhub path: length-sorted left-padded batches of 8 through generate()
  hf-static        transformers model.generate() on length-sorted batches of 8
  hf-cb            transformers generate_batch's ContinuousBatchingManager (paged cache, sdpa),
                   the same KV budget and max_batch_tokens
Reported: output tokens/s (requested tokens / wall time), requests/s, TTFT p50/p95 (from t=0,
when every request is submitted), TPOT p50/p95, peak RSS of the process.

    python benchmarks/throughput.py [--quick] [--models SmolLM2-135M gpt2-124M] [--workloads plain prefix]
                                    [--contenders engine static hf-static hf-cb] [--dtype float32|bfloat16]
                                    [--threads N]

On a machine shared with other busy processes, OpenMP threads that spin-wait at every
barrier lose most of their time to the others: there `--threads 1` (or OMP_WAIT_POLICY=PASSIVE)
measures the contenders far more faithfully than the default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from decode import smollm2_135m
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from taskhub.cpu_kernels import cpu_info

EOS = 0
KV_CACHE_BYTES = 2 << 30  # the KV budget of both continuous batchers
MAX_BATCH_TOKENS = 512
STATIC_BATCH = 8
MODEL_DIR = Path(os.environ.get("TASKHUB_BENCH_MODELS", "/tmp/taskhub_bench_models"))
BUILDERS = {
    "SmolLM2-135M": lambda: LlamaForCausalLM(smollm2_135m()),
    "gpt2-124M": lambda: GPT2LMHeadModel(
        GPT2Config(n_positions=2048, eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS)
    ),
}


def checkpoint(name: str) -> Path:
    """A saved random-weight checkpoint of the named shape (built once)."""
    path = MODEL_DIR / name
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        BUILDERS[name]().save_pretrained(path, safe_serialization=True)
    return path


def workload(quick: bool, prefix: bool, vocab: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """(prompt ids, max_new_tokens) per request."""
    rng = random.Random(seed)
    n, (lo, hi), median, (new_lo, new_hi), shared = (
        (32, (16, 256), 64, (8, 64), 128) if quick else (128, (16, 1024), 100, (16, 256), 512)
    )
    head = [rng.randrange(10, vocab) for _ in range(shared)] if prefix else []
    out = []
    for _ in range(n):
        length = int(min(hi, max(lo, math.exp(rng.gauss(math.log(median), 0.9)))))
        out.append((head + [rng.randrange(10, vocab) for _ in range(length)], rng.randint(new_lo, new_hi)))
    return out


# ---- contenders (each returns per request: ttft, tpot, and the wall time) -------------------
def run_engine(path: Path, requests, dtype: torch.dtype, prefix_caching: bool = True):
    from taskhub_textgen.api import Engine, GenerationConfig
    from taskhub_textgen.checkpoint import load_transformer

    model = load_transformer(path, dtype=dtype)
    engine = Engine(
        model, kv_cache_bytes=KV_CACHE_BYTES, max_batch_tokens=MAX_BATCH_TOKENS, prefix_caching=prefix_caching
    )
    engine.submit([11, 12, 13], GenerationConfig(max_new_tokens=2, eos_token_id=[])).result()  # warm-up
    t0 = time.perf_counter()
    handles = [engine.submit(ids, GenerationConfig(max_new_tokens=m, eos_token_id=[])) for ids, m in requests]
    rows = [h.result()[0].metrics for h in handles]
    wall = time.perf_counter() - t0
    stats = engine.stats()
    engine.close()
    extra = {"prefix_hit_rate": stats.prefix_hit_rate, "preemptions": stats.preemptions, "steps": stats.steps}
    return [(r["ttft_s"], r["tpot_s"]) for r in rows], wall, extra


def sorted_batches(requests):
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]))
    return [order[i : i + STATIC_BATCH] for i in range(0, len(order), STATIC_BATCH)]


def run_static(path: Path, requests, dtype: torch.dtype):
    from taskhub_textgen.api import GenerationConfig, PromptBatch, generate
    from taskhub_textgen.checkpoint import load_transformer
    from taskhub_textgen.native_backend import NativeBackend

    model = load_transformer(path, dtype=dtype)
    warm = PromptBatch.left_padded([[11, 12, 13]], EOS, torch.device("cpu"))
    generate(NativeBackend(model), warm, GenerationConfig(max_new_tokens=2, eos_token_id=[]))
    out: list = [None] * len(requests)
    t0 = time.perf_counter()
    for batch in sorted_batches(requests):
        start = time.perf_counter() - t0
        prompts = PromptBatch.left_padded([requests[i][0] for i in batch], EOS, torch.device("cpu"))
        config = GenerationConfig(max_new_tokens=max(requests[i][1] for i in batch), eos_token_id=[], pad_token_id=EOS)
        gens = generate(NativeBackend(model), prompts, config)
        for i, (g,) in zip(batch, gens):
            out[i] = (start + g.metrics["ttft_s"], g.metrics["tpot_s"])
    return out, time.perf_counter() - t0, {}


def run_hf_static(path: Path, requests, dtype: torch.dtype):
    from transformers import LogitsProcessor, LogitsProcessorList

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = EOS

    class Clock(LogitsProcessor):
        def __init__(self) -> None:
            self.ticks: list[float] = []

        def __call__(self, input_ids, scores):
            self.ticks.append(time.perf_counter())
            return scores

    def padded(batch):
        width = max(len(requests[i][0]) for i in batch)
        ids = torch.full((len(batch), width), EOS)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            p = requests[i][0]
            ids[r, width - len(p) :], mask[r, width - len(p) :] = torch.tensor(p), 1
        return ids, mask

    with torch.inference_mode():
        model.generate(torch.tensor([[11, 12, 13]]), max_new_tokens=2, do_sample=False)
        out: list = [None] * len(requests)
        t0 = time.perf_counter()
        for batch in sorted_batches(requests):
            ids, mask = padded(batch)
            clock = Clock()
            new = max(requests[i][1] for i in batch)
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                logits_processor=LogitsProcessorList([clock]),
            )
            tpot = (clock.ticks[-1] - clock.ticks[0]) / max(len(clock.ticks) - 1, 1)
            for i in batch:
                out[i] = (clock.ticks[0] - t0, tpot)
        return out, time.perf_counter() - t0, {}


def run_hf_cb(path: Path, requests, dtype: torch.dtype):
    from transformers import GenerationConfig as HFGenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="paged|sdpa").eval()
    cfg = model.config
    layers, kvh = cfg.num_hidden_layers, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    block = 32
    num_blocks = KV_CACHE_BYTES // (2 * layers * block * kvh * head_dim * torch.finfo(dtype).bits // 8)
    generation = HFGenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=EOS, max_new_tokens=16)
    cb = ContinuousBatchingConfig(block_size=block, num_blocks=num_blocks, max_batch_tokens=MAX_BATCH_TOKENS)
    with torch.inference_mode():
        manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=cb)
        manager.start()
        manager.add_request([11, 12, 13], request_id="warm", max_new_tokens=2)
        manager.get_result(request_id="warm", timeout=600)
        t0 = time.perf_counter()
        for i, (ids, m) in enumerate(requests):
            manager.add_request(ids, request_id=str(i), max_new_tokens=m, record_timestamps=True)
        results = {}
        while len(results) < len(requests):
            result = manager.get_result(timeout=600)
            if result is None:
                raise RuntimeError("generate_batch's manager stopped early")
            if result.request_id != "warm" and result.is_finished():
                results[int(result.request_id)] = result
        wall = time.perf_counter() - t0
        manager.stop(block=True)
    out = []
    for i in range(len(requests)):
        ts = results[i].timestamps
        assert len(results[i].generated_tokens) == requests[i][1], "generate_batch stopped a request early"
        out.append((ts[0] - t0, (ts[-1] - ts[0]) / max(len(ts) - 1, 1)))
    return out, wall, {}


CONTENDERS = {
    "engine": run_engine,
    "engine-noprefix": lambda p, r, d: run_engine(p, r, d, prefix_caching=False),
    "static": run_static,
    "hf-static": run_hf_static,
    "hf-cb": run_hf_cb,
}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def child(args: argparse.Namespace) -> None:
    """Run one contender on one workload; print its figures as JSON."""
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = checkpoint(args.model)
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    requests = workload(args.quick, args.workload == "prefix", vocab)
    rows, wall, extra = CONTENDERS[args.contender](path, requests, dtype)
    tokens = sum(m for _, m in requests)
    ttft, tpot = [r[0] for r in rows], [r[1] for r in rows]
    print(
        json.dumps(
            {
                "tokens_per_s": tokens / wall,
                "requests_per_s": len(requests) / wall,
                "ttft_p50": percentile(ttft, 50),
                "ttft_p95": percentile(ttft, 95),
                "tpot_p50": percentile(tpot, 50),
                "tpot_p95": percentile(tpot, 95),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "wall_s": wall,
                **extra,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="+", default=list(BUILDERS))
    parser.add_argument("--workloads", nargs="+", default=["plain", "prefix"], choices=["plain", "prefix"])
    parser.add_argument("--contenders", nargs="+", default=["engine", "static", "hf-static", "hf-cb"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads of every contender (0: torch's default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu_info().line()}, load {os.getloadavg()}"
    )
    print(
        f"{'model':13} {'workload':8} {'contender':16} {'tok/s':>8} {'req/s':>6} {'TTFT p50':>9} {'p95':>7} "
        f"{'TPOT p50':>9} {'p95':>7} {'RSS MB':>7}  notes"
    )
    for model in args.models:
        checkpoint(model)
        for wl in args.workloads:
            contenders = list(args.contenders)
            if wl == "prefix" and "engine" in contenders and "engine-noprefix" not in contenders:
                contenders.insert(contenders.index("engine") + 1, "engine-noprefix")
            figures = {}
            for name in contenders:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--model",
                    model,
                    "--workload",
                    wl,
                    "--contender",
                    name,
                    "--dtype",
                    args.dtype,
                    "--threads",
                    str(args.threads),
                ] + (["--quick"] if args.quick else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{model:13} {wl:8} {name:16} failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                f = figures[name] = json.loads(proc.stdout.strip().splitlines()[-1])
                notes = ", ".join(
                    f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in f.items()
                    if k in ("prefix_hit_rate", "preemptions", "steps")
                )
                print(
                    f"{model:13} {wl:8} {name:16} {f['tokens_per_s']:8.1f} {f['requests_per_s']:6.2f} "
                    f"{f['ttft_p50']:9.2f} {f['ttft_p95']:7.2f} {f['tpot_p50'] * 1000:7.1f}ms {f['tpot_p95'] * 1000:5.0f}ms "
                    f"{f['peak_rss_mb']:7.0f}  {notes}",
                    flush=True,
                )
            if "engine" in figures:
                e = figures["engine"]["tokens_per_s"]
                ratios = {k: e / v["tokens_per_s"] for k, v in figures.items() if k != "engine"}
                print("  engine speed-up: " + ", ".join(f"{k} {r:.2f}x" for k, r in ratios.items()), flush=True)


if __name__ == "__main__":
    main()
