"""The text-generation plugin's public face: the only module other plugins may import.

Audio (Whisper), multimodal (captioning, VLMs), rag and the server decode through these
names; everything else in taskhub_textgen is private and may change.
"""

from __future__ import annotations

from .backend import LogitsBackend, PromptBatch
from .config import GenerationConfig, with_model_defaults
from .generate import Generation, finish_text, generate, stream
from .hf_backend import ExtraInputs, HFBackend
from .stopping import cut_at_stop

__all__ = [
    "ExtraInputs",
    "Generation",
    "GenerationConfig",
    "HFBackend",
    "LogitsBackend",
    "PromptBatch",
    "cut_at_stop",
    "finish_text",
    "generate",
    "stream",
    "with_model_defaults",
]
