"""Decode speed: taskhub's native decoder vs transformers and llama.cpp on CPU, real model shapes.

Random weights with the shapes of GPT-2 small (124M), SmolLM2-135M and Gemma 3 270M (its
shapes in Llama blocks) are saved as safetensors checkpoints; transformers and taskhub load
them, and llama.cpp (llama-cpp-python) loads the same weights written as GGUF by
gguf_export.py (F32, BF16, Q8_0). Every engine decodes greedily (prompt 32 tokens, 128 new
tokens, no EOS stop) at batch 1 and 8 (llama.cpp, and taskhub's continuous-batching engine serving one
request: batch 1 only), in this process, with the same
number of threads. Each cell is the fastest of --repeats runs after one warm-up, the engines
interleaved so that load from other processes falls on all of them alike.

Reported per engine: tokens/s (generated tokens of all rows / wall time), TTFT (prompt in ->
first token chosen), TPOT (mean time per later token), peak memory, and the fraction of the
memory-bandwidth bound. Peak memory = bytes of the loaded weights + the growth of the
process's resident-set high-water mark during generation (VmHWM, reset through
/proc/self/clear_refs before each run): the cache, activations and allocator overhead.
The bandwidth bound assumes every decode step streams all weights the step reads (the
embedding table only when it doubles as the output head) at the measured read bandwidth
(a large tensor sum; measured before every cell, the best value so far is used, as the
timings are best-of-N too). Other processes on the machine slow every engine; the CPU
model, its flags and the load average are printed so runs can be compared.

Native extras: bf16 weights, weight-only int8 (per channel) and int4 (groups of 32), with
bf16 activations; with --compile the fp32 model under torch.compile (compile time reported apart).
llama.cpp rows need llama-cpp-python built for this CPU (see LLAMA_CPP_INSTALL) and `gguf`;
without them the rows are skipped with a message.

    python benchmarks/decode.py [--repeats 5] [--models ...] [--batches 1 8] [--no-extras] [--compile [max-autotune]]
        [--llama-cpp-path /path/to/venv/lib/python3.11/site-packages]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.checkpoint import load_transformer
from taskhub_textgen.compiled import compile_decode_step
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.engine.engine import Engine as GenerationEngine
from taskhub_textgen.generate import generate
from taskhub_textgen.model import Transformer
from taskhub_textgen.native_backend import NativeBackend
from taskhub_textgen.quantize import quantize
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer

sys.path.insert(0, str(Path(__file__).parent))
from gguf_export import export_gguf  # noqa: E402  (benchmarks/ is not a package)

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


def gemma3_270m_shape() -> LlamaConfig:
    """Gemma 3 270M's shapes (wide head_dim, one KV head, 262k vocabulary) in Llama blocks."""
    return LlamaConfig(
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        vocab_size=262144,
        max_position_embeddings=32768,
        rope_theta=1000000,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        bos_token_id=2,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2-124M": lambda: GPT2LMHeadModel(GPT2Config(eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS)),
    "SmolLM2-135M": lambda: LlamaForCausalLM(smollm2_135m()),
    "gemma3-270M-shape": lambda: LlamaForCausalLM(gemma3_270m_shape()),
}
LLAMA_CPP_INSTALL = (
    'Install it built for this CPU: CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python gguf '
    "(or into another venv and pass --llama-cpp-path that venv's site-packages)."
)


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


def read_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes read per second by summing a large fp32 tensor (far bigger than the caches), best of `repeats`."""
    src = torch.randn(n_bytes // 4)
    src.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        src.sum()
        best = min(best, time.perf_counter() - t)
    return n_bytes / best


def cpu_description() -> str:
    """CPU model and the vector / matrix extensions the kernels may use (Linux /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma", "f16c"))
    return f"{model}, {os.cpu_count()} logical CPUs, flags: {' '.join(wanted)}"


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def llama_cpp_available(extra_path: str | None) -> bool:
    """Whether llama-cpp-python imports (from `extra_path` too, appended after site-packages)."""
    if extra_path:
        sys.path.append(extra_path)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print(f"llama.cpp rows skipped: llama-cpp-python is not installed. {LLAMA_CPP_INSTALL}")
        return False
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("llama.cpp rows skipped: the gguf package is not installed (pip install gguf).")
        return False
    return True


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


def run_engine(engine: GenerationEngine, ids: torch.Tensor, *, new: int) -> Run:
    """One request through the continuous-batching engine: what pipe(prompt) and the server run."""
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, eos_token_id=[EOS], pad_token_id=EOS)
    with PeakRSS() as peak:
        start = time.perf_counter()
        (generation,) = engine.submit(ids[0].tolist(), config).result()
        wall = time.perf_counter() - start
    return Run(wall, generation.metrics["ttft_s"], peak.growth, torch.tensor([generation.token_ids]))


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


@dataclass
class Engine:
    """One contender: a generation function and the bytes it holds and reads per decode step."""

    run: Callable[[torch.Tensor], Run]  # ids [B, T] -> Run
    weight_bytes: int
    step_bytes: int
    batch1_only: bool = False


def module_engine(run: Callable[[torch.Tensor], Run], module: torch.nn.Module) -> Engine:
    output = module.output if isinstance(module, Transformer) else module.get_output_embeddings()
    return Engine(run, weight_bytes(module), bytes_per_step(module, output))


def build_engines(path: Path, new: int, extras: bool, compile_mode: str | None, llama_cpp: bool) -> dict[str, Engine]:
    """Every engine to time, loaded from the checkpoint at `path`."""
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    backends = {"taskhub fp32": NativeBackend.from_pretrained(path, dtype=torch.float32)}
    if extras:
        backends["taskhub bf16"] = NativeBackend.from_pretrained(path, dtype=torch.bfloat16)
        for scheme in ("int8", "int4"):
            backends[f"taskhub {scheme}"] = NativeBackend(quantize(load_transformer(path, dtype=torch.float32), scheme))
    if compile_mode:
        for name in ("fp32", "bf16", "int8") if extras else ("fp32",):
            backends[f"taskhub {name} compiled"] = compiled_backend(path, name, compile_mode)
    engines = {"transformers fp32": module_engine(partial(run_transformers, hf, new=new), hf)}
    for name, backend in backends.items():
        engines[name] = module_engine(partial(run_native, backend, new=new), backend.model)
    model = backends["taskhub fp32"].model  # the same weights, served by the engine (batch 1: one request)
    engine = GenerationEngine(model, kv_cache_bytes=256 << 20)
    engines["taskhub engine fp32"] = Engine(
        partial(run_engine, engine, new=new), weight_bytes(model), bytes_per_step(model, model.output), True
    )
    if llama_cpp:
        for outtype in ("f32", "bf16", "q8_0") if extras else ("f32",):
            gguf_path = path / f"model-{outtype}.gguf"
            step = export_gguf(path, gguf_path, outtype)
            llm = load_llama_cpp(gguf_path, new)
            run = partial(run_llama_cpp, llm, new=new)
            engines[f"llama.cpp {outtype}"] = Engine(run, gguf_path.stat().st_size, step, batch1_only=True)
    return engines


def load_llama_cpp(path: Path, new: int) -> Any:
    """llama.cpp model with the benchmark's threads, without "extra buffer types" (weight repacking).

    The repacked (AMX) Q8_0 path died with SIGILL on the machine the figures come from, so it
    is off for every GGUF type; llama-cpp-python does not expose the switch, hence the patch.
    """
    import llama_cpp
    import llama_cpp.llama as llama_module

    defaults = llama_cpp.llama_model_default_params

    def no_repacking() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    threads = torch.get_num_threads()
    llama_module.llama_cpp.llama_model_default_params = no_repacking
    try:
        return llama_cpp.Llama(
            str(path), n_ctx=256 + new, n_batch=256, n_threads=threads, n_threads_batch=threads, verbose=False
        )
    finally:
        llama_module.llama_cpp.llama_model_default_params = defaults


def run_llama_cpp(llm: Any, ids: torch.Tensor, *, new: int) -> Run:
    """Greedy decoding through llama.cpp's eval loop (argmax of the last logits, no EOS stop), batch 1."""
    prompt = ids[0].tolist()
    tokens, ttft = [], 0.0
    with PeakRSS() as peak:
        start = time.perf_counter()
        llm.reset()
        llm.eval(prompt)
        for step in range(new):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            tokens.append(token)
            if step == 0:
                ttft = time.perf_counter() - start
            if step + 1 < new:
                llm.eval([token])
        wall = time.perf_counter() - start
    return Run(wall, ttft, peak.growth, torch.tensor([tokens]))


def bench_batch(engines: dict[str, Engine], ids: torch.Tensor, new: int, repeats: int, bandwidth: float) -> float:
    """Time every engine on one batch of prompts, print the table and the ratios; the bandwidth used."""
    batch = ids.shape[0]
    engines = {name: e for name, e in engines.items() if batch == 1 or not e.batch1_only}
    bandwidth = max(bandwidth, read_bandwidth())
    for name, engine in engines.items():
        if "compiled" in name:
            start = time.perf_counter()
            engine.run(ids)
            print(
                f"  {name}: first generation {time.perf_counter() - start:.1f} s "
                "(compilation; not in the numbers below)",
                flush=True,
            )
    runs = measure({name: partial(e.run, ids) for name, e in engines.items()}, repeats)
    results = {}
    for name, engine in engines.items():
        bound_tps = batch * bandwidth / engine.step_bytes
        results[name] = report(name, runs[name], batch, new, engine.weight_bytes, bound_tps)
    base, ours = results["transformers fp32"], results["taskhub fp32"]
    same = (runs["transformers fp32"].tokens == runs["taskhub fp32"].tokens).all(dim=1).sum().item()
    print(
        f"  ratio taskhub/transformers fp32: {ours['tps'] / base['tps']:.2f}x tokens/s, "
        f"TTFT {ours['ttft'] / base['ttft']:.2f}x;  identical greedy rows: {same}/{batch};  "
        f"read bandwidth {bandwidth / 1e9:.1f} GB/s;  load average {load_average()}",
        flush=True,
    )
    for ours_name, theirs_name in (("fp32", "f32"), ("bf16", "bf16"), ("int8", "q8_0")):
        rows = [name for name in (f"taskhub {ours_name}", f"taskhub {ours_name} compiled") if name in results]
        if f"llama.cpp {theirs_name}" in results and rows:
            for name in rows:  # eager, then compiled where it ran
                a, b = results[name], results[f"llama.cpp {theirs_name}"]
                print(
                    f"  ratio {name} / llama.cpp {theirs_name}: {a['tps'] / b['tps']:.2f}x tokens/s, "
                    f"TTFT {a['ttft'] / b['ttft']:.2f}x",
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
        "--compile",
        nargs="?",
        const="default",
        choices=["default", "max-autotune"],
        help="add the native fp32 / bf16 / int8 models with a compiled decode step in this mode "
        "(default: default; compiles for minutes)",
    )
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp rows")
    parser.add_argument(
        "--llama-cpp-path", help="site-packages of another environment holding llama-cpp-python (appended to sys.path)"
    )
    args = parser.parse_args()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    llama_cpp = not args.no_llama_cpp and llama_cpp_available(args.llama_cpp_path)
    bandwidth = read_bandwidth()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"read bandwidth {bandwidth / 1e9:.1f} GB/s, load average {load_average()}\n{cpu_description()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            path = Path(tmp) / model_name
            MODELS[model_name]().save_pretrained(path, safe_serialization=True)
            engines = build_engines(path, args.new_tokens, not args.no_extras, args.compile, llama_cpp)
            for batch in args.batches:
                print(
                    f"\n{model_name}  batch {batch}  prompt {args.prompt_tokens}  new {args.new_tokens}  "
                    f"(best of {args.repeats})",
                    flush=True,
                )
                ids = torch.randint(1, 1000, (batch, args.prompt_tokens))
                bandwidth = bench_batch(engines, ids, args.new_tokens, args.repeats, bandwidth)
            del engines


def compiled_backend(path: Path, kind: str, mode: str) -> NativeBackend:
    """Native backend ("fp32", "bf16" or "int8") whose decode steps run one inductor graph (compiled.py) in `mode`."""
    model = load_transformer(path, dtype=torch.bfloat16 if kind == "bf16" else torch.float32)
    if kind == "int8":
        model = quantize(model, "int8")
    return NativeBackend(model, compile_decode_step(model, mode))


if __name__ == "__main__":
    main()
