"""Embeddings for indexing and queries, through taskhub's public feature-extraction pipeline (offline: the packaged MiniLM)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_BATCH = 64
DTYPES = ("float32", "bfloat16")  # bfloat16: ~1.6-2.4x faster on CPUs with AMX / AVX512-BF16, cosine >= 0.9998 to fp32


class Embedder:
    """A sentence encoder: L2-normalised vectors (cosine = dot product) and the tokenizer chunks are counted with."""

    def __init__(
        self, model: str | None = None, revision: str | None = None, device: str | None = None, dtype: str = "float32"
    ) -> None:
        import taskhub

        self.pipe = taskhub.pipeline(
            "feature-extraction", model or DEFAULT_MODEL, revision=revision, device=device, dtype=dtype
        )
        self.model_id: str = self.pipe.model_id or DEFAULT_MODEL
        self.revision = revision
        self.dtype = dtype

    @property
    def tokenizer(self) -> Any:
        return self.pipe.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Most content tokens one embedded text keeps (the model's limit less its special tokens)."""
        return int(self.pipe.model.max_length) - int(self.tokenizer.num_special_tokens_to_add())

    @property
    def dim(self) -> int:
        return int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32, unit length."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self.pipe(list(texts), batch_size=EMBED_BATCH, normalize=True)
        return np.asarray(vectors, dtype=np.float32)


_embedders: dict[tuple[str | None, str | None, str | None, str], Embedder] = {}
_lock = threading.Lock()


def get_embedder(
    model: str | None, revision: str | None = None, device: str | None = None, dtype: str = "float32"
) -> Embedder:
    """One Embedder per (model, revision, device, dtype) per process (the pipeline caches the loaded weights)."""
    key = (model or DEFAULT_MODEL, revision, device, dtype)
    with _lock:
        if key not in _embedders:
            _embedders[key] = Embedder(model, revision, device, dtype)
        return _embedders[key]
