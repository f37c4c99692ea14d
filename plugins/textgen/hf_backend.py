"""LogitsBackend over any transformers generative model, decoder-only or encoder-decoder."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from .backend import PromptBatch

ExtraInputs = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class HFBackend:
    """Runs a transformers model's own forward and KV cache, the way `model.generate()` feeds it.

    Decoder-only: position ids come from the attention mask and an all-ones mask is dropped,
    as in generate(). `batch.encoder_inputs` (a VLM's pixel_values, image_sizes, ...) are
    extra forward kwargs, passed at every step through the model's
    `prepare_inputs_for_generation` as generate() passes its model_kwargs: the model keeps
    what it reads every step and drops what it reads only on the first forward.
    Encoder-decoder (BART, T5, Marian, Whisper, VisionEncoderDecoder, ...):
    `batch.encoder_inputs` go to `model.get_encoder()` once; the decoder then runs from
    `batch.input_ids` (the decoder start ids) with an EncoderDecoderCache.
    """

    def __init__(self, model: Any, extra_inputs: ExtraInputs | None = None) -> None:
        """`extra_inputs` (decoder-only models): turns `batch.encoder_inputs` into the extra forward
        kwargs once, at prefill, under inference mode (e.g. flatten per-prompt image stacks, or
        embed images a text decoder cross-attends to). Default: the encoder inputs as they are."""
        self.model = model.eval()
        self.extra_inputs = extra_inputs
        self.is_encoder_decoder = bool(model.config.is_encoder_decoder)
        self.vocab_size = int(model.config.get_text_config(decoder=True).vocab_size)
        params = inspect.signature(model.forward).parameters
        self._takes_position_ids = not self.is_encoder_decoder and "position_ids" in params
        self._takes_logits_to_keep = "logits_to_keep" in params
        self._kwargs: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return self.model.device

    def _new_cache(self) -> DynamicCache | EncoderDecoderCache:
        config = self.model.config.get_text_config(decoder=True)
        if self.is_encoder_decoder:
            return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        return DynamicCache(config=config)

    def _encode(self, encoder_inputs: dict[str, torch.Tensor]) -> Any:
        encoder = self.model.get_encoder()
        params = inspect.signature(encoder.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        inputs = {k: v for k, v in encoder_inputs.items() if takes_any or k in params}
        return encoder(**inputs, return_dict=True)

    def _forward(self, input_ids: torch.Tensor, first: bool) -> torch.Tensor:
        inputs = self.model.prepare_inputs_for_generation(
            input_ids, next_sequence_length=None if first else 1, is_first_iteration=first, **self._kwargs
        )
        logits = self.model(**inputs, return_dict=True).logits
        return logits[:, -1].to(dtype=torch.float32, copy=True)

    @torch.inference_mode()
    def prefill(self, batch: PromptBatch, max_new_tokens: int) -> torch.Tensor:
        """Encode (encoder-decoder) and run the prompt; [B, V] logits of the first new token."""
        kwargs: dict[str, Any] = {"use_cache": True, "cache": self._new_cache()}
        if self._takes_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        mask = batch.attention_mask
        if self.is_encoder_decoder:
            kwargs["encoder_outputs"] = self._encode(batch.encoder_inputs)
            if "attention_mask" in batch.encoder_inputs:
                kwargs["attention_mask"] = batch.encoder_inputs["attention_mask"]
            if not bool(mask.all()):
                kwargs["decoder_attention_mask"] = mask
        else:
            if self._takes_position_ids:
                kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            if not bool(mask.all()):
                kwargs["attention_mask"] = mask
            if batch.encoder_inputs:
                extra = self.extra_inputs
                kwargs.update(batch.encoder_inputs if extra is None else extra(batch.encoder_inputs))
        self._kwargs = kwargs
        return self._forward(batch.input_ids, first=True)

    @torch.inference_mode()
    def decode(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; [B, V] logits of the token after it."""
        kwargs = self._kwargs
        if "position_ids" in kwargs:
            kwargs["position_ids"] = kwargs["position_ids"][:, -1:] + 1
        mask_key = "decoder_attention_mask" if self.is_encoder_decoder else "attention_mask"
        if (mask := kwargs.get(mask_key)) is not None:
            kwargs[mask_key] = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        return self._forward(next_ids[:, None], first=False)

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Reorder the KV cache rows.

        Beams only move within one prompt's group, whose rows share the prompt, so masks,
        positions and encoder outputs need no reordering (generate() does the same).
        """
        self._kwargs["cache"].reorder_cache(beam_idx)
