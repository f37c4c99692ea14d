"""The text plugin's public face: the only module other plugins may import.

textgen's extractive summarizer embeds sentences with it; vision's ViT reuses the fused
encoder Linear. Everything else in taskhub_text is private and may change.
"""

from __future__ import annotations

from .embeddings import embed
from .encoder import EncoderConfig, Linear, fused_linear_available
from .loading import TextModel, load_text_model
from .tokenize import encode_texts

__all__ = ["EncoderConfig", "Linear", "TextModel", "embed", "encode_texts", "fused_linear_available", "load_text_model"]
