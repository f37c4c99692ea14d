"""Registers the audio plugin: its stages, model loaders and task manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub.hookspecs import hookimpl

TASKHUB_REQUIRES = ("textgen",)  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("audio.load", "taskhub_audio.features:load")
    register("audio.extract_features", "taskhub_audio.features:extract_features")
    register("audio.chunk", "taskhub_audio.asr:chunk_audio", "taskhub_audio.params:ChunkParams")
    register("audio.recognize", "taskhub_audio.asr:recognize", "taskhub_audio.params:WhisperParams")
    register("audio.transcript", "taskhub_audio.asr:to_text", "taskhub_audio.params:OutputParams")
    register("audio.classify", "taskhub_audio.classify:classify")
    register("audio.top_labels", "taskhub_audio.classify:top_labels", "taskhub_audio.params:LabelParams")
    register("audio.tokenize_text", "taskhub_audio.tts:tokenize")
    register("audio.synthesize", "taskhub_audio.tts:synthesize", "taskhub_audio.params:SpeechParams")


@hookimpl
def register_input_kinds(register: Callable[..., None]) -> None:
    register("audio", "an audio path, bytes, or a numpy array with sampling_rate", by_path=True)


def is_waveform(result: object) -> bool:
    """A text-to-speech result: {"audio", "sampling_rate"}."""
    return isinstance(result, dict) and {"audio", "sampling_rate"} <= result.keys()


@hookimpl
def register_result_writers(register: Callable[..., None]) -> None:
    register("audio.wav", is_waveform, "taskhub_audio.tts:write_wav")


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("audio.speech_recognition", "taskhub_audio.loading:load_speech_recognizer")
    register("audio.classification", "taskhub_audio.loading:load_audio_classifier")
    register("audio.text_to_waveform", "taskhub_audio.loading:load_text_to_waveform")


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "audio")
