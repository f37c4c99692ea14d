"""The text-generation plugin's public face: the only module other plugins may import.

Audio (Whisper), multimodal (captioning, VLMs), rag and the server decode through these
names; everything else in taskhub_textgen is private and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Torch-free, imported now: other plugins' params models build on GenerationConfig, and registering
# or validating them must not import torch.
from .config import GenerationConfig, with_model_defaults

if TYPE_CHECKING:
    from .backend import LogitsBackend, PromptBatch
    from .engine.engine import Engine, EngineStats
    from .engine.request import RequestCancelled, RequestHandle
    from .generate import generate, stream
    from .generation import Generation, finish_text
    from .hf_backend import ExtraInputs, HFBackend
    from .stopping import cut_at_stop
    from .streams import SequenceStream, SequenceStreams

# The rest import torch: each is imported from its module when first used (PEP 562).
_LAZY = {
    "LogitsBackend": ".backend",
    "PromptBatch": ".backend",
    "Engine": ".engine.engine",
    "EngineStats": ".engine.engine",
    "RequestCancelled": ".engine.request",
    "RequestHandle": ".engine.request",
    "generate": ".generate",
    "stream": ".generate",
    "Generation": ".generation",
    "finish_text": ".generation",
    "ExtraInputs": ".hf_backend",
    "HFBackend": ".hf_backend",
    "cut_at_stop": ".stopping",
    "SequenceStream": ".streams",
    "SequenceStreams": ".streams",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value
    return value


def model_engine(loaded: Any) -> Engine | None:
    """The engine of a model loaded by textgen's loader (a Pipeline's `.model`); None when it
    decodes static batches only (transformers backend, encoder-decoder, engine disabled).

    `engine.submit(prompt_ids_or_text, config, stream=False)` returns a RequestHandle:
    `.result()` blocks for the Generations, iterating gives text deltas, `.cancel()` frees
    its KV blocks; with num_return_sequences > 1, `.indexed()` gives (sequence index, text delta) and,
    as each sequence ends, (sequence index, Generation);
    `engine.stats()` reports load, cache use, prefix hit rate, preemptions.
    """
    engine = getattr(loaded, "engine", None)
    return engine() if callable(engine) else None


__all__ = [
    "Engine",
    "EngineStats",
    "ExtraInputs",
    "Generation",
    "GenerationConfig",
    "HFBackend",
    "LogitsBackend",
    "PromptBatch",
    "RequestCancelled",
    "RequestHandle",
    "SequenceStream",
    "SequenceStreams",
    "cut_at_stop",
    "finish_text",
    "generate",
    "model_engine",
    "stream",
    "with_model_defaults",
]
