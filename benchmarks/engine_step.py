"""Cost of one engine step at 1, 8 and 32 running rows, split into scheduling, step building, forward and sampling.

Random weights of the SmolLM2-135M shape (fp32, the throughput benchmark's checkpoint). For each
row count the engine (no background thread) gets that many greedy requests with prompts of
--context tokens and steps until all of them decode; then --steps decode steps are timed. With
--mixed every timed step also runs one --chunk-token prefill chunk of a newly admitted request
(max_batch_tokens = rows + chunk). The reference is the static path (NativeBackend) decoding a
batch of the same rows and context: what the same forward costs without paging or scheduling.
Each cell is the best of --repeats runs, engine and static interleaved.

Times are CPU time of the process (time.process_time): with --threads 1 that is the step's own work, and
on a machine shared with other busy processes it is far steadier than wall time.
Reported per step (ms): schedule (Scheduler.schedule), build (the runner's index tensors and
masks), model (the forward itself), choose (every request picking its tokens), total, and the
static decode step. --profile prints torch.profiler's top operators of the engine's steps.

    cd benchmarks && python engine_step.py [--rows 1 8 32] [--mixed] [--context 128] [--steps 16] [--threads 1] [--profile]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial

import torch
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.checkpoint import load_transformer
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.engine.engine import Engine
from taskhub_textgen.model import Transformer
from taskhub_textgen.native_backend import NativeBackend
from throughput import checkpoint

from taskhub.cpu_kernels import cpu_info


class Timers:
    """Wall time spent in wrapped methods, per name."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)

    def wrap(self, owner: object, method: str, name: str) -> None:
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.total[name] += time.process_time() - start

        setattr(owner, method, timed)


def prompts(rows: int, context: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab, (rows, context), generator=g).tolist()


def engine_steps(model: Transformer, rows: int, args: argparse.Namespace, profile: bool = False) -> dict[str, float]:
    """ms per timed step, split by phase."""
    chunk = args.chunk if args.mixed else 0
    engine = Engine(model, kv_cache_bytes=1 << 30, max_batch_tokens=max(rows + chunk, args.context), background=False)
    config = GenerationConfig(max_new_tokens=args.steps + 8, eos_token_id=[])
    vocab = model.cfg.vocab_size
    handles = [engine.submit(p, config) for p in prompts(rows, args.context, vocab, 0)]
    engine.step()
    while any(r.live_rows[0].pending > 1 for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    engine.scheduler.max_batch_tokens = rows + chunk
    extra = (
        [
            engine.submit(p, GenerationConfig(max_new_tokens=1, eos_token_id=[]))
            for p in prompts(args.steps, chunk, vocab, 1)
        ]
        if chunk
        else []
    )
    timers = Timers()
    timers.wrap(engine.scheduler, "schedule", "schedule")
    timers.wrap(engine.runner, "forward", "forward")
    timers.wrap(engine.model, "forward", "model")
    timers.wrap(engine, "_choose", "choose")
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else None
    start = time.process_time()
    if prof is not None:
        prof.__enter__()
    for _ in range(args.steps):
        engine.step()
    if prof is not None:
        prof.__exit__(None, None, None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    total = time.process_time() - start
    del handles, extra
    engine.close()
    t = {k: 1e3 * v / args.steps for k, v in timers.total.items()}
    return {
        "schedule": t["schedule"],
        "build": t["forward"] - t["model"],
        "model": t["model"],
        "choose": t["choose"],
        "total": 1e3 * total / args.steps,
    }


def static_steps(model: Transformer, rows: int, args: argparse.Namespace) -> dict[str, float]:
    """ms per decode step of the static path (greedy argmax included) over the same rows and context."""
    backend = NativeBackend(model)
    ids = torch.tensor(prompts(rows, args.context, model.cfg.vocab_size, 0))
    logits = backend.prefill(PromptBatch(ids, torch.ones_like(ids)), args.steps + 1)
    start = time.process_time()
    for _ in range(args.steps):
        logits = backend.decode(logits.argmax(dim=-1))
    return {"static": 1e3 * (time.process_time() - start) / args.steps}


def best(fn: Callable[[], dict[str, float]], runs: list[dict[str, float]]) -> None:
    result = fn()
    key = "total" if "total" in result else "static"
    if not runs or result[key] < runs[0][key]:
        runs[:] = [result]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--context", type=int, default=128, help="prompt tokens of every decoding row")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--mixed", action="store_true", help="add one prefill chunk to every timed step")
    parser.add_argument("--chunk", type=int, default=64, help="tokens of that chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_transformer(checkpoint("SmolLM2-135M"), dtype=torch.float32)
    info = cpu_info()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {info}, load {os.getloadavg()}")
    print(f"context {args.context}, {f'decode + one {args.chunk}-token chunk' if args.mixed else 'decode only'}")
    print(
        f"{'rows':>5} {'schedule':>9} {'build':>7} {'model':>7} {'choose':>7} {'total':>7} {'static':>7} {'ratio':>6}"
    )
    with torch.inference_mode():
        for rows in args.rows:
            engine_runs: list[dict[str, float]] = []
            static_runs: list[dict[str, float]] = []
            for _ in range(args.repeats):
                best(partial(engine_steps, model, rows, args), engine_runs)
                best(partial(static_steps, model, rows, args), static_runs)
            e, s = engine_runs[0], static_runs[0]["static"]
            print(
                f"{rows:5d} {e['schedule']:9.2f} {e['build']:7.2f} {e['model']:7.2f} {e['choose']:7.2f} "
                f"{e['total']:7.2f} {s:7.2f} {e['total'] / s:6.2f}",
                flush=True,
            )
            if args.profile:
                engine_steps(model, rows, args, profile=True)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
