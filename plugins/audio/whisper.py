"""Whisper speech recognition through the textgen plugin's decoding loop, so its sampling controls apply."""

from __future__ import annotations

from typing import Any

import torch
from taskhub_textgen.api import GenerationConfig, HFBackend, PromptBatch, generate, with_model_defaults
from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

from taskhub.errors import ParamError

from .features import Features
from .loading import AudioModel
from .params import WhisperParams


def language_id(generation_config: Any, language: str) -> int:
    """Token id of a language given as a code, an English name or the token itself."""
    lang_to_id: dict[str, int] = getattr(generation_config, "lang_to_id", None) or {}
    name = language.lower()
    code = TO_LANGUAGE_CODE.get(name, name)
    token = name if name.startswith("<|") else f"<|{code}|>"
    if token not in lang_to_id:
        known = ", ".join(sorted(t.strip("<|>") for t in lang_to_id)) or "none (English-only model)"
        raise ParamError(f"language={language!r} is not one this model knows. Languages: {known}")
    return lang_to_id[token]


def is_multilingual(generation_config: Any) -> bool:
    return bool(getattr(generation_config, "lang_to_id", None)) and getattr(generation_config, "is_multilingual", True)


def detect_languages(backend: HFBackend, features: torch.Tensor, generation_config: Any) -> list[int]:
    """Per row, the language token Whisper finds likeliest right after <|startoftranscript|>."""
    start = torch.full((features.shape[0], 1), generation_config.decoder_start_token_id, device=features.device)
    logits = backend.prefill(PromptBatch(start, torch.ones_like(start), {"input_features": features}), 1)
    lang_ids = torch.tensor(sorted(generation_config.lang_to_id.values()), device=logits.device)
    return lang_ids[logits[:, lang_ids].argmax(dim=-1)].tolist()


def prompts(backend: HFBackend, features: torch.Tensor, generation_config: Any, params: WhisperParams) -> torch.Tensor:
    """[B, P] decoder prompts as HF's Whisper generate() builds them without timestamps:
    <|startoftranscript|> (<|lang|> <|task|>)? <|notimestamps|>?"""
    rows = features.shape[0]
    prompt = [[generation_config.decoder_start_token_id] for _ in range(rows)]
    if is_multilingual(generation_config):
        if params.language is not None:
            langs = [language_id(generation_config, params.language)] * rows
        else:
            langs = detect_languages(backend, features, generation_config)
        task = generation_config.task_to_id[params.whisper_task]
        prompt = [p + [lang, task] for p, lang in zip(prompt, langs)]
    elif params.language is not None or params.whisper_task != "transcribe":
        raise ParamError("This Whisper model is English-only: it takes neither language nor whisper_task=translate.")
    no_timestamps = getattr(generation_config, "no_timestamps_token_id", None)
    if no_timestamps is not None:
        prompt = [p + [no_timestamps] for p in prompt]
    return torch.tensor(prompt, device=features.device)


def decoding_config(audio_model: AudioModel, params: WhisperParams, prompt_len: int) -> GenerationConfig:
    """The caller's controls over the checkpoint's (EOS, pad, suppressed tokens, ...), with at most
    as many new tokens as the decoder has positions left after the prompt."""
    config = with_model_defaults(params, audio_model.model.generation_config, prompt_len)
    room = audio_model.model.config.max_target_positions - prompt_len
    return config.model_copy(update={"max_new_tokens": min(params.max_new_tokens, room)})


def transcribe(audio_model: AudioModel, chunks: list[Features], params: WhisperParams, device: str) -> list[list[int]]:
    """Generated token ids per chunk (prompt and final EOS excluded), all chunks as one batch."""
    model = audio_model.model
    features = torch.cat([c.tensors["input_features"] for c in chunks]).to(device, model.dtype)  # [B, mels, frames]
    backend = HFBackend(model)
    prompt = prompts(backend, features, model.generation_config, params)
    config = decoding_config(audio_model, params, prompt.shape[1])
    batch = PromptBatch(prompt, torch.ones_like(prompt), {"input_features": features})
    results = generate(backend, batch, config)
    finish = set(config.finish_ids)
    out = []
    for best, *_ in results:
        ids = best.token_ids
        out.append(ids[:-1] if ids and ids[-1] in finish and best.finish_reason != "length" else ids)
    return out


def merge_overlapping(sequences: list[list[int]], special_ids: set[int]) -> list[list[int]]:
    """What each chunk adds to the transcript when neighbouring chunks overlap in audio.

    HF's longest-common-sequence rule: the new chunk's first i tokens are aligned with the
    transcript's last i tokens, for the i with the highest match rate (ties: the longest;
    at least two matching tokens); the tokens after that overlap are appended.
    """
    merged: list[int] = []
    added = []
    for sequence in sequences:
        tokens = [t for t in sequence if t not in special_ids]
        best, overlap = 0.0, 0
        for i in range(1, min(len(tokens), len(merged)) + 1):
            matches = sum(a == b for a, b in zip(merged[-i:], tokens[:i]))
            score = matches / i + i / 10000.0
            if matches > 1 and score > best:
                best, overlap = score, i
        added.append(tokens[overlap:])
        merged.extend(tokens[overlap:])
    return added
