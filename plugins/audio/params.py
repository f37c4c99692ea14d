"""The params models of the audio plugin's stages: pydantic only, no torch, so registering and validating a
manifest stay cheap."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from taskhub_textgen.api import GenerationConfig

Seconds = Annotated[float, Field(ge=0)]


class ChunkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunk_length_s: float | None = Field(None, gt=0, description="Split audio into chunks this long (seconds)")
    stride_length_s: Seconds | tuple[Seconds, Seconds] | None = Field(
        None, description="Overlap on each side of a chunk, seconds (default chunk_length_s / 6)"
    )


class OutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_timestamps: bool | Literal["word", "char", "chunk"] = Field(
        False, description='"word"/"char" (CTC) or True/"chunk" (per audio chunk)'
    )


class LabelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(5, ge=1, description="Best labels to return; None = all")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="Default: from the model's problem_type, as HF does"
    )


class SpeechParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = Field(
        None, description="Seeds VITS' stochastic duration and noise per input, so the audio is reproducible"
    )


class WhisperParams(GenerationConfig):
    """textgen's decoding controls (greedy by default), plus Whisper's language and task."""

    max_new_tokens: int = Field(256, ge=0, description="HF's ASR default; capped to what the decoder can hold")
    language: str | None = Field(None, description='"en", "english" or "<|en|>"; None detects it per chunk')
    whisper_task: Literal["transcribe", "translate"] = "transcribe"
