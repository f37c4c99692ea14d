"""The text plugin's public face: the only module other plugins may import.

textgen's extractive summarizer embeds sentences with it; vision's ViT reuses EncoderConfig (the fused
Linear itself lives in the core: taskhub.cpu_kernels). Everything else in taskhub_text is private.
"""

from __future__ import annotations

from .embeddings import embed
from .encoder import EncoderConfig
from .loading import TextModel, load_text_model
from .tokenize import encode_texts

__all__ = ["EncoderConfig", "TextModel", "embed", "encode_texts", "load_text_model"]
