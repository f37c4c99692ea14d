"""Model loader of the textgen plugin: the native decoder when it covers the checkpoint, else transformers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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
from .hf_backend import HFBackend
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
    def pad_token_id(self) -> int:
        """Id used to pad prompts: the tokenizer's pad, else the model's pad, else its EOS, else 0."""
        for value in (self.tokenizer.pad_token_id, self.generation_config.pad_token_id):
            if value is not None:
                return int(value)
        eos = self.generation_config.eos_token_id
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        return int(eos) if eos is not None else 0


SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _generation_config(path: Path, config: dict[str, Any]) -> HFGenerationConfig:
    """generation_config.json, or the special token ids of config.json when the checkpoint has none."""
    if (path / "generation_config.json").is_file():
        return HFGenerationConfig.from_pretrained(path)
    return HFGenerationConfig(**{k: config[k] for k in SPECIAL_IDS if config.get(k) is not None})


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def load_generative_lm(source: ModelSource) -> TextGenModel:
    """A causal or encoder-decoder LM with its tokenizer.

    `options.backend`: "auto" (default: native decoder when checkpoint.is_supported, else
    transformers), "native" or "transformers". `options.quantize`: "int8" or "int4"
    weight-only quantization of the native decoder's linear layers (bf16 activations).
    """
    path = Path(source.path)
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
    if choice == "native" or (choice == "auto" and native_ok):
        transformer = load_transformer(path, dtype=source.dtype, device=source.device)
        if scheme not in (None, "none"):
            transformer = quantize(transformer, scheme)
        make: Callable[[], LogitsBackend] = partial(NativeBackend, transformer)
        native = True
    else:
        auto: Any = AutoModelForSeq2SeqLM if config.get("is_encoder_decoder") else AutoModelForCausalLM
        model = auto.from_pretrained(path, **source.from_pretrained_kwargs()).to(device).eval()
        make = partial(HFBackend, model)
        native = False
    return TextGenModel(make, tokenizer, config, _generation_config(path, config), device, native)
