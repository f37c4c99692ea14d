"""Structured output cost: decode speed with a nested JSON Schema vs unconstrained, and grammar compile time.

SmolLM2-135M shape (vocabulary 49,152), random weights, fp32, native decoder, greedy, prompt 32
tokens, 128 new tokens, batch 1 and 8. The SmolLM2 tokenizer is not available offline, so a
49,152-token byte-level BPE is trained with `tokenizers` on local text (samples/, the Python
standard library and site-packages' .py/.md/.txt/.rst files) and cached in the temp folder.
The schema has a long free-text field (minLength 2000) so that the constrained run, like the
unconstrained one (EOS suppressed), decodes all 128 tokens: tokens/s compare like for like.
Each cell is the best of --repeats runs after a warm-up, the two contenders interleaved. The
constraint's own cost per step (mask all rows + advance) is also timed alone, outside decoding.

Compile time, for a typical nested schema and for the benchmark's: building llguidance's view of
the tokenizer (once per tokenizer), compiling the schema with that tokenizer cached (parameter
check + matcher construction + first mask, the grammar cache empty; best of --compile-repeats),
and taking it from taskhub's cache. With --xgrammar-path DIR (a folder where xgrammar is
installed, e.g. `pip install --no-deps --target DIR xgrammar`) xgrammar's tokenizer-info
build and schema compile are timed on the same tokenizer and schema.

    python benchmarks/structured.py [--repeats 3] [--compile-repeats 10] [--new-tokens 128] [--batches 1 8]
                                    [--xgrammar-path DIR] [--mask-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from taskhub_textgen import constrain
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.checkpoint import load_transformer
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.generate import generate
from taskhub_textgen.native_backend import NativeBackend
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from taskhub.cpu_kernels import cpu_info

VOCAB = 49152
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's first ids: EOS = 0
CORPUS_BYTES = 24 * 2**20
NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0},
        "user": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "email": {"type": "string", "format": "email"},
                "roles": {"type": "array", "items": {"enum": ["admin", "editor", "viewer"]}, "maxItems": 3},
            },
            "required": ["name", "roles"],
            "additionalProperties": False,
        },
        "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "maxItems": 4},
        "summary": {"type": "string", "minLength": 2000},
    },
    "required": ["id", "user", "scores", "summary"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "record", "schema": NESTED_SCHEMA}}
TYPICAL_SCHEMA = {**NESTED_SCHEMA, "properties": {**NESTED_SCHEMA["properties"], "summary": {"type": "string"}}}


def corpus_files() -> Iterator[Path]:
    """Local text: the repository's samples, then the standard library and site-packages."""
    roots = [Path(__file__).resolve().parents[1] / "samples", Path(sysconfig.get_paths()["stdlib"])]
    roots.append(Path(sysconfig.get_paths()["purelib"]))
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in (".txt", ".md", ".rst", ".py") and path.is_file():
                yield path


def corpus() -> Iterator[str]:
    total = 0
    for path in corpus_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        yield text
        total += len(text)
        if total > CORPUS_BYTES:
            return


def smollm2_tokenizer(cache: Path) -> PreTrainedTokenizerFast:
    """A 49,152-token byte-level BPE like SmolLM2's, trained once on local text and cached."""
    if not cache.is_file():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        start = time.perf_counter()
        tok.train_from_iterator(corpus(), trainer=trainer)
        print(f"trained the {VOCAB}-token BPE in {time.perf_counter() - start:.0f} s -> {cache}")
        tok.save(str(cache))
    return PreTrainedTokenizerFast(tokenizer_file=str(cache), eos_token=SPECIALS[0], pad_token=SPECIALS[0])


def smollm2_model(folder: Path) -> Path:
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=VOCAB,
        max_position_embeddings=8192,
        rope_theta=100000,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def best_interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest wall time of each contender, after one warm-up, the contenders taking turns."""
    for run in contenders.values():
        run()
    best = {name: float("inf") for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            best[name] = min(best[name], timed(run))
    return best


def compile_times(tokenizer: PreTrainedTokenizerFast, schema: dict, repeats: int) -> dict[str, float]:
    """Seconds: llguidance tokenizer build, schema compile (tokenizer cached), taking it from the cache.

    compile = the parameter check + matcher construction + the first mask, the grammar cache empty.
    """
    out = {"tokenizer": timed(lambda: constrain.COMPILED.tokenizer(tokenizer, VOCAB))}

    def cold() -> None:
        constrain.COMPILED.matchers.clear()
        constrain.check_format.cache_clear()
        fmt = constrain.output_format(GenerationConfig(response_format=schema))
        assert fmt is not None
        constrain.GrammarConstraint.start(fmt, tokenizer, [0], VOCAB).allowed(VOCAB)

    out["compile"] = min(timed(cold) for _ in range(repeats))
    fmt = constrain.output_format(GenerationConfig(response_format=schema))
    assert fmt is not None
    out["cached"] = min(timed(lambda: constrain.GrammarConstraint.start(fmt, tokenizer, [0], VOCAB)) for _ in range(20))
    return out


def xgrammar_times(
    tokenizer: PreTrainedTokenizerFast, schema: dict, folder: str, repeats: int
) -> dict[str, float] | None:
    """xgrammar's tokenizer-info build and schema compile on the same tokenizer, if it is installed in `folder`."""
    sys.path.insert(0, folder)
    try:
        import xgrammar
    except ImportError as exc:
        print(f"xgrammar not importable from {folder}: {exc}")
        return None
    start = time.perf_counter()
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=VOCAB)
    out = {"tokenizer": time.perf_counter() - start}
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
    out["compile"] = min(
        timed(lambda: compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)) for _ in range(repeats)
    )
    return out


def mask_cost(tokenizer: PreTrainedTokenizerFast, batch: int, steps: int) -> float:
    """Seconds per step of the constraint alone (mask every row, advance by a token drawn from the masked
    random scores), through the benchmark schema's long string: what the constraint adds to a decode step."""
    fmt = constrain.output_format(GenerationConfig(response_format=FORMAT))
    assert fmt is not None
    rows = constrain.RowConstraints.start(fmt, tokenizer, batch, [0], VOCAB)
    generator = torch.Generator().manual_seed(0)
    spent = 0.0
    for _ in range(steps):
        scores = torch.randn(batch, VOCAB, generator=generator)
        start = time.perf_counter()
        masked = rows(None, scores)  # type: ignore[arg-type]
        spent += time.perf_counter() - start
        chosen = torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=generator)[:, 0]
        start = time.perf_counter()
        rows.advance(chosen)
        spent += time.perf_counter() - start
    return spent / steps


def decode_speed(path: Path, tokenizer: PreTrainedTokenizerFast, batch: int, new: int, repeats: int) -> dict:
    transformer = load_transformer(path, dtype=torch.float32, device="cpu")
    torch.manual_seed(1)
    ids = torch.randint(100, VOCAB, (batch, 32)).tolist()
    prompts = PromptBatch.left_padded(ids, 0, torch.device("cpu"))
    free = GenerationConfig(max_new_tokens=new, eos_token_id=[])
    bound = GenerationConfig(max_new_tokens=new, eos_token_id=[], response_format=FORMAT)
    lengths: dict[str, int] = {}

    def run(name: str, config: GenerationConfig) -> Callable[[], object]:
        def go() -> None:
            results = generate(NativeBackend(transformer), prompts, config, tokenizer)
            lengths[name] = sum(len(g.token_ids) for gens in results for g in gens)

        return go

    best = best_interleaved(
        {"unconstrained": run("unconstrained", free), "json_schema": run("json_schema", bound)}, repeats
    )
    return {name: lengths[name] / seconds for name, seconds in best.items()} | {"tokens": dict(lengths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--compile-repeats", type=int, default=10)
    parser.add_argument("--xgrammar-path", default=None)
    parser.add_argument("--mask-only", action="store_true", help="compile times and constraint cost, no decoding")
    parser.add_argument("--tokenizer-cache", type=Path, default=Path(tempfile.gettempdir()) / "taskhub_bpe_49152.json")
    args = parser.parse_args()
    cpu = cpu_info().line()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, load average {os.getloadavg()}")
    tokenizer = smollm2_tokenizer(args.tokenizer_cache)
    for name, schema in (("typical nested schema", TYPICAL_SCHEMA), ("benchmark schema", NESTED_SCHEMA)):
        times = compile_times(tokenizer, schema, args.compile_repeats)
        print(
            f"{name}: llguidance tokenizer build {times['tokenizer'] * 1e3:.0f} ms (once per tokenizer); "
            f"compile {times['compile'] * 1e3:.1f} ms (tokenizer cached); from cache {times['cached'] * 1e3:.3f} ms"
        )
        if args.xgrammar_path:
            xg = xgrammar_times(tokenizer, schema, args.xgrammar_path, args.compile_repeats)
            if xg:
                print(
                    f"{name}: xgrammar tokenizer build {xg['tokenizer'] * 1e3:.0f} ms; "
                    f"compile {xg['compile'] * 1e3:.1f} ms"
                )
    for batch in args.batches:
        print(f"batch {batch}: constraint alone {mask_cost(tokenizer, batch, args.new_tokens) * 1e3:.2f} ms per step")
    if args.mask_only:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = smollm2_model(Path(folder))
        for batch in args.batches:
            speed = decode_speed(path, tokenizer, batch, args.new_tokens, args.repeats)
            ratio = speed["json_schema"] / speed["unconstrained"]
            print(
                f"batch {batch}: unconstrained {speed['unconstrained']:.1f} tok/s, json_schema "
                f"{speed['json_schema']:.1f} tok/s, ratio {ratio:.3f} (tokens {speed['tokens']})"
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
