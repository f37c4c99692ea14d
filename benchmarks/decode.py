"""Decode speed: taskhub's native decoder vs transformers generate(), fp32 CPU, real model shapes.

Random weights with the shapes of GPT-2 small (124M) and SmolLM2-135M are saved as safetensors
checkpoints, then both engines load them and decode greedily (prompt 32 tokens, 128 new
tokens, EOS suppressed so every row runs the full length) at batch 1 and 8, in this process,
with the same torch threads. Each cell is the fastest of --repeats runs after one warm-up, the engines
interleaved so that load from other processes falls on all of them alike.

Reported per engine: tokens/s (generated tokens of all rows / wall time), TTFT (prompt in ->
first token chosen), TPOT (mean time per later token), peak memory, and the fraction of the
memory-bandwidth bound. Peak memory = bytes of the loaded weights + the growth of the
process's resident-set high-water mark during generation (VmHWM, reset through
/proc/self/clear_refs before each run): the cache, activations and allocator overhead.
The bandwidth bound assumes every decode step streams all weights the step reads (the
embedding table only when it doubles as the output head) at the measured copy bandwidth
(bytes read + written per second of a large tensor copy, as STREAM counts it; measured
before every cell, the best value so far is used, as the timings are best-of-N too).
Other processes on the machine slow OpenMP-parallel kernels of both engines; run it on a
quiet machine (OMP_WAIT_POLICY=PASSIVE softens the effect of a busy one).

Extras (native only): bf16 weights, weight-only int8 (per-channel, bf16 activations), and
with --compile the fp32 model under torch.compile (compile time reported apart).

    python benchmarks/decode.py [--repeats 3] [--new-tokens 128] [--batches 1 8] [--no-extras] [--compile]
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import transformers
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.checkpoint import load_transformer
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.generate import generate
from taskhub_textgen.model import Transformer
from taskhub_textgen.native_backend import NativeBackend
from taskhub_textgen.quantize import quantize_int8
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer

EOS = 0


def smollm2_135m() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2-124M": lambda: GPT2LMHeadModel(GPT2Config(eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS)),
    "SmolLM2-135M": lambda: LlamaForCausalLM(smollm2_135m()),
}


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Growth of the resident-set high-water mark while the block runs (Linux glibc; 0 elsewhere).

    Freed heap pages are first handed back to the OS (malloc_trim), so memory that an earlier
    run allocated and freed is counted again when this run needs it.
    """

    def __enter__(self) -> PeakRSS:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        self.base = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = max(_status_bytes("VmHWM") - self.base, 0)


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) by copying a large fp32 tensor."""
    src = torch.randn(n_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * n_bytes / best


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of distinct parameter and buffer storages (tied matrices counted once)."""
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def bytes_per_step(module: torch.nn.Module, output: torch.nn.Module) -> int:
    """Weight bytes one decode step reads: all but lookup tables not shared with the output head."""
    lookups = [m.weight for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    return weight_bytes(module) - sum(t.nbytes for t in lookups if t.data_ptr() != output.weight.data_ptr())


@dataclass
class Run:
    """Timing of one generation of the whole batch."""

    wall_s: float
    ttft_s: float
    peak_growth: int
    tokens: torch.Tensor  # [B, new]


class FirstTokenClock(BaseStreamer):
    """transformers streamer that timestamps the first generated token."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2:  # the first put is the prompt
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def run_transformers(model: torch.nn.Module, ids: torch.Tensor, *, new: int) -> Run:
    clock = FirstTokenClock()
    with torch.inference_mode(), PeakRSS() as peak:
        start = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new,
            min_new_tokens=new,
            pad_token_id=EOS,
            eos_token_id=EOS,
            streamer=clock,
        )
        wall = time.perf_counter() - start
    return Run(wall, clock.first - start, peak.growth, out[:, ids.shape[1] :])


def run_native(backend: NativeBackend, ids: torch.Tensor, *, new: int) -> Run:
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, eos_token_id=[EOS], pad_token_id=EOS)
    batch = PromptBatch(ids, torch.ones_like(ids))
    with PeakRSS() as peak:
        start = time.perf_counter()
        rows = generate(backend, batch, config)
        wall = time.perf_counter() - start
    ttft = rows[0][0].metrics["ttft_s"]
    return Run(wall, ttft, peak.growth, torch.tensor([r[0].token_ids for r in rows]))


def measure(engines: dict[str, Callable[[], Run]], repeats: int) -> dict[str, Run]:
    """Fastest of `repeats` runs per engine, engines interleaved so load changes hit all alike."""
    for fn in engines.values():
        fn()  # warm-up: allocator, oneDNN kernel selection
    best: dict[str, Run] = {}
    for _ in range(repeats):
        for name, fn in engines.items():
            run = fn()
            if name not in best or run.wall_s < best[name].wall_s:
                best[name] = run
    return best


def report(name: str, run: Run, batch: int, new: int, weights: int, bound_tps: float) -> dict[str, float]:
    tps = batch * new / run.wall_s
    tpot = (run.wall_s - run.ttft_s) / (new - 1)
    peak = weights + run.peak_growth
    print(
        f"  {name:<22} {tps:8.1f} tok/s  TTFT {run.ttft_s * 1e3:7.1f} ms  TPOT {tpot * 1e3:6.1f} ms  "
        f"peak {peak / 2**20:7.0f} MiB (weights {weights / 2**20:.0f} + {run.peak_growth / 2**20:.0f})  "
        f"{100 * tps / bound_tps:5.1f}% of bandwidth bound",
        flush=True,
    )
    return {"tps": tps, "ttft": run.ttft_s}


Engine = tuple[Callable[[torch.Tensor], Run], torch.nn.Module]  # (ids -> Run, the weights it reads)


def build_engines(path: Path, new: int, extras: bool, compile_: bool) -> dict[str, Engine]:
    """Every engine to time, loaded from the checkpoint at `path`."""
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    backends = {"taskhub fp32": NativeBackend.from_pretrained(path, dtype=torch.float32)}
    if extras:
        backends["taskhub bf16 (extra)"] = NativeBackend.from_pretrained(path, dtype=torch.bfloat16)
        backends["taskhub int8 (extra)"] = NativeBackend(quantize_int8(load_transformer(path, dtype=torch.float32)))
    if compile_:
        backends["taskhub fp32 compiled (extra)"] = compiled_backend(path)
    engines: dict[str, Engine] = {"transformers fp32": (partial(run_transformers, hf, new=new), hf)}
    for name, backend in backends.items():
        engines[name] = (partial(run_native, backend, new=new), backend.model)
    return engines


def bench_batch(engines: dict[str, Engine], ids: torch.Tensor, new: int, repeats: int, bandwidth: float) -> float:
    """Time every engine on one batch of prompts, print the table and the ratios; the bandwidth used."""
    batch = ids.shape[0]
    bandwidth = max(bandwidth, copy_bandwidth())
    for name, (fn, _) in engines.items():
        if "compiled" in name:
            start = time.perf_counter()
            fn(ids)
            print(
                f"  torch.compile: first generation {time.perf_counter() - start:.1f} s "
                "(compilation; not in the numbers below)",
                flush=True,
            )
    runs = measure({name: partial(fn, ids) for name, (fn, _) in engines.items()}, repeats)
    results = {}
    for name, (_, module) in engines.items():
        bound_tps = batch * bandwidth / _step_bytes(module)
        results[name] = report(name, runs[name], batch, new, weight_bytes(module), bound_tps)
    base, ours = results["transformers fp32"], results["taskhub fp32"]
    same = (runs["transformers fp32"].tokens == runs["taskhub fp32"].tokens).all(dim=1).sum().item()
    print(
        f"  ratio taskhub/transformers fp32: {ours['tps'] / base['tps']:.2f}x tokens/s, "
        f"TTFT {ours['ttft'] / base['ttft']:.2f}x;  identical greedy rows: {same}/{batch};  "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s",
        flush=True,
    )
    return bandwidth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--no-extras", action="store_true", help="skip the bf16 and int8 native runs")
    parser.add_argument(
        "--compile", action="store_true", help="add the fp32 native model under torch.compile (compiles for minutes)"
    )
    args = parser.parse_args()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    bandwidth = copy_bandwidth()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            path = Path(tmp) / model_name
            MODELS[model_name]().save_pretrained(path, safe_serialization=True)
            engines = build_engines(path, args.new_tokens, not args.no_extras, args.compile)
            for batch in args.batches:
                print(
                    f"\n{model_name}  batch {batch}  prompt {args.prompt_tokens}  new {args.new_tokens}  "
                    f"(best of {args.repeats})",
                    flush=True,
                )
                ids = torch.randint(1, 1000, (batch, args.prompt_tokens))
                bandwidth = bench_batch(engines, ids, args.new_tokens, args.repeats, bandwidth)
            del engines


def compiled_backend(path: Path) -> NativeBackend:
    """fp32 native backend whose forward runs through torch.compile (inductor, weights frozen)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants inductor may pre-pack
    backend = NativeBackend.from_pretrained(path, dtype=torch.float32)
    backend.model.forward = torch.compile(backend.model.forward, dynamic=True)
    return backend


def _step_bytes(module: torch.nn.Module) -> int:
    output = module.output if isinstance(module, Transformer) else module.get_output_embeddings()
    return bytes_per_step(module, output)


if __name__ == "__main__":
    main()
