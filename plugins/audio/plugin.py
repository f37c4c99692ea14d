"""Registers the audio plugin: its stages, model loaders and task manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub.hookspecs import hookimpl

from . import asr, classify, features, tts, whisper
from .loading import load_audio_classifier, load_speech_recognizer, load_text_to_waveform

TASKHUB_REQUIRES = ("textgen",)  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("audio.load", features.load)
    register("audio.extract_features", features.extract_features)
    register("audio.chunk", asr.chunk_audio, asr.ChunkParams)
    register("audio.recognize", asr.recognize, whisper.WhisperParams)
    register("audio.transcript", asr.to_text, asr.OutputParams)
    register("audio.classify", classify.classify)
    register("audio.top_labels", classify.top_labels, classify.LabelParams)
    register("audio.tokenize_text", tts.tokenize)
    register("audio.synthesize", tts.synthesize, tts.SpeechParams)


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("audio.speech_recognition", load_speech_recognizer)
    register("audio.classification", load_audio_classifier)
    register("audio.text_to_waveform", load_text_to_waveform)


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "audio")
