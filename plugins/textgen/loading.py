"""Model loader of the textgen plugin: the native decoder when it covers the checkpoint, else transformers."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers import GenerationConfig as HFGenerationConfig

from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource

from .backend import LogitsBackend
from .checkpoint import load_transformer
from .compiled import COMPILE_MODES, compile_decode_step
from .engine.engine import Engine, engine_supports
from .hf_backend import HFBackend
from .model import Transformer
from .native_backend import NativeBackend, is_supported
from .quantize import QUANTIZERS, quantize


@dataclass
class TextGenModel:
    """What textgen stages find in ctx.model: a backend factory, the tokenizer, the checkpoint's defaults."""

    make_backend: Callable[[], LogitsBackend]  # a fresh backend per request: backends hold a request's cache
    tokenizer: PreTrainedTokenizerBase
    config: dict[str, Any]  # the checkpoint's config.json
    generation_config: HFGenerationConfig  # generation_config.json (or config.json's special token ids)
    device: torch.device
    native: bool  # served by the native decoder
    transformer: Transformer | None = None  # the native decoder, when native
    engine_options: dict[str, Any] = field(default_factory=dict)  # Engine keyword arguments (source.options["engine"])
    _engine: Engine | None = field(default=None, init=False, repr=False)
    _engine_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def engine(self) -> Engine | None:
        """The continuous-batching engine shared by every caller of this loaded model (None: static path only)."""
        if self.transformer is None or self.engine_options.get("enabled") is False:
            return None
        if not engine_supports(self.transformer):
            return None
        with self._engine_lock:
            if self._engine is None:
                options = {k: v for k, v in self.engine_options.items() if k != "enabled"}
                self._engine = Engine(self.transformer, self.tokenizer, **options)
        return self._engine

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.config.get("is_encoder_decoder", False))

    @property
    def decoder_start_token_id(self) -> int:
        """First decoder token of an encoder-decoder model."""
        start = self.generation_config.decoder_start_token_id
        start = self.config.get("decoder_start_token_id") if start is None else start
        if start is None:
            start = self.config.get("pad_token_id")
        if start is None:
            raise ModelNotAvailableError("The model's config names no decoder_start_token_id.")
        return int(start)

    @property
    def vocab_size(self) -> int | None:
        """Rows of the model's logits (token ids 0..vocab_size-1), from config.json."""
        value = self._text_config.get("vocab_size")
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def context(self) -> tuple[int, str] | None:
        """(positions, config key) the model's position embeddings support; None = no fixed limit (T5).

        Dynamic NTK RoPE extends max_position_embeddings by its factor; the other RoPE scalings
        already state the extended length in max_position_embeddings.
        """
        cfg = self._text_config
        if cfg.get("model_type") in RELATIVE_POSITIONS:
            return None
        for key in ("n_positions", "max_position_embeddings"):
            positions = cfg.get(key)
            if isinstance(positions, int) and positions > 0:
                rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
                if rope.get("rope_type", rope.get("type")) == "dynamic":
                    return int(positions * rope.get("factor", 1.0)), f"{key} x dynamic RoPE factor"
                return positions, key
        return None

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token of one row costs (fp32 estimate; cross-attention counted for encoder-decoders)."""
        cfg = self._text_config
        layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("decoder_layers") or 1
        heads = cfg.get("num_attention_heads") or cfg.get("n_head") or cfg.get("decoder_attention_heads") or 1
        kv_heads = cfg.get("num_key_value_heads") or heads
        hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or 64 * heads
        head_dim = cfg.get("head_dim") or hidden // heads
        per_layer = 2 * kv_heads * head_dim * 4
        return int(layers * per_layer * (2 if self.is_encoder_decoder else 1))

    @property
    def _text_config(self) -> dict[str, Any]:
        return self.config.get("text_config") or self.config

    @property
    def pad_token_id(self) -> int:
        """Id used to pad prompts: the tokenizer's pad, else the model's pad, else its EOS, else 0."""
        for value in (self.tokenizer.pad_token_id, self.generation_config.pad_token_id):
            if value is not None:
                return int(value)
        eos = self.generation_config.eos_token_id
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        return int(eos) if eos is not None else 0


RELATIVE_POSITIONS = ("t5", "mt5", "umt5", "longt5")  # relative attention: no position table to run past


def generation_memory_budget() -> int:
    """Bytes one generation batch may claim: TASKHUB_MAX_GENERATION_BYTES, else half the machine's memory."""
    configured = os.environ.get("TASKHUB_MAX_GENERATION_BYTES")
    if configured:
        return int(configured)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _generation_config(path: Path, config: dict[str, Any]) -> HFGenerationConfig:
    """generation_config.json, or the special token ids of config.json when the checkpoint has none."""
    if (path / "generation_config.json").is_file():
        return HFGenerationConfig.from_pretrained(path)
    return HFGenerationConfig(**{k: config[k] for k in SPECIAL_IDS if config.get(k) is not None})


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def _compile_option(source: ModelSource) -> str | None:
    """The `compile` option, checked before any weight is read."""
    mode = source.options.get("compile")
    if mode not in (None, "none", *COMPILE_MODES):
        raise ModelNotAvailableError(f"Unknown compile option {mode!r}; expected none, {', '.join(COMPILE_MODES)}.")
    return mode


def load_gguf_lm(source: ModelSource) -> TextGenModel:
    """A .gguf file on the native decoder, with the tokenizer its metadata describes."""
    from .gguf import load_gguf_tokenizer, load_gguf_transformer, read_gguf_config

    if source.options.get("backend", "auto") == "transformers":
        raise ModelNotAvailableError("GGUF files load on the native decoder only; use backend auto or native.")
    config = read_gguf_config(source.path)
    compile_mode = _compile_option(source)
    transformer = load_gguf_transformer(source.path, dtype=source.dtype, device=source.device)
    generation_config = HFGenerationConfig(**{k: config[k] for k in SPECIAL_IDS if config.get(k) is not None})
    tokenizer = load_gguf_tokenizer(source.path)
    make: Callable[[], LogitsBackend] = partial(
        NativeBackend, transformer, compile_decode_step(transformer, compile_mode)
    )
    return TextGenModel(make, tokenizer, config, generation_config, torch.device(source.device), native=True)


def load_generative_lm(source: ModelSource) -> TextGenModel:
    """A causal or encoder-decoder LM with its tokenizer.

    `options.backend`: "auto" (default: native decoder when checkpoint.is_supported, else
    transformers), "native" or "transformers". `options.engine`: keyword arguments of the
    native decoder's continuous-batching Engine (kv_cache_bytes, block_size, max_batch_tokens,
    max_running, prefix_caching), or {"enabled": false} to decode static batches only.
    `options.quantize`: "int8" or "int4" weight-only quantization of the native decoder's
    linear layers (bf16 activations). `options.compile`: "default" or "max-autotune" runs the
    native decoder's static-batch decode steps as one torch.compile graph (compiled.py; the
    first generation compiles, for tens of seconds to minutes, and logs that it does).
    """
    path = Path(source.path)
    if path.suffix == ".gguf" and path.is_file():
        return load_gguf_lm(source)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"{path} has no readable config.json: {exc}") from exc
    choice = source.options.get("backend", "auto")
    if choice not in ("auto", "native", "transformers"):
        raise ModelNotAvailableError(f"Unknown backend {choice!r}; expected auto, native or transformers.")
    scheme = source.options.get("quantize")
    if scheme not in (None, "none", *QUANTIZERS):
        raise ModelNotAvailableError(f"Unknown quantize option {scheme!r}; expected none, {', '.join(QUANTIZERS)}.")
    compile_mode = _compile_option(source)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=source.trust_remote_code)
    native_ok = not config.get("is_encoder_decoder") and is_supported(config) and _has_safetensors(path)
    if choice == "native" and not native_ok:
        raise ModelNotAvailableError(
            f"The native decoder does not cover {config.get('model_type')!r} checkpoints at {path}."
        )
    if scheme not in (None, "none") and not (native_ok and choice != "transformers" and source.device == "cpu"):
        raise ModelNotAvailableError(
            f"quantize={scheme!r} needs the native decoder on the CPU; {path} is not served so."
        )
    device = torch.device(source.device)
    engine_options = dict(source.options.get("engine") or {})
    if choice == "native" or (choice == "auto" and native_ok):
        transformer = load_transformer(path, dtype=source.dtype, device=source.device)
        if scheme not in (None, "none"):
            transformer = quantize(transformer, scheme)
        step = compile_decode_step(transformer, compile_mode)
        make: Callable[[], LogitsBackend] = partial(NativeBackend, transformer, step)
        return TextGenModel(
            make, tokenizer, config, _generation_config(path, config), device, True, transformer, engine_options
        )
    auto: Any = AutoModelForSeq2SeqLM if config.get("is_encoder_decoder") else AutoModelForCausalLM
    model = auto.from_pretrained(path, **source.from_pretrained_kwargs()).to(device).eval()
    return TextGenModel(partial(HFBackend, model), tokenizer, config, _generation_config(path, config), device, False)
