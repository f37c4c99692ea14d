"""The params models of the multimodal plugin's stages: pydantic only, no torch, so registering and validating a
manifest stay cheap."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CaptionPromptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, description="Text the caption starts with (conditional captioning, e.g. BLIP)")


class ChatInputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    continue_final_message: bool | None = Field(
        None, description="Continue the last message instead of answering it (default: when it is the assistant's)"
    )


class ChatOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_full_text: bool = Field(
        True, description="generated_text is the whole chat (or prompt + answer); False: the answer alone"
    )
