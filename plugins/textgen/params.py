"""The params models of the textgen plugin's stages: pydantic only, no torch, so registering and validating a
manifest stay cheap."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .config import GenerationConfig


class PromptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str = Field("", description="Text put before every string prompt (not before chat messages)")
    add_special_tokens: bool | None = Field(
        None, description="Tokenizer's BOS/EOS around string prompts (default: the tokenizer's)"
    )
    continue_final_message: bool = Field(
        False, description="Chat: continue the last message instead of starting an assistant reply"
    )
    response_format_field: str | None = Field(
        None, description='Field of a {"text"} / {"messages"} input that holds its own response_format'
    )


class TextGenerationParams(GenerationConfig):
    """Every decoding control, plus streaming."""

    stream: bool = Field(False, description="Return an iterator of text deltas per input instead of the result")
    truncation: Literal["left"] | None = Field(
        None,
        description="A prompt + max_new_tokens beyond the model's context is an error; \"left\" keeps the prompt's end",
    )


class TextOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_full_text: bool = Field(True, description="Prompt + generated text (chat: the messages + the reply)")
    return_metrics: bool = Field(
        False, description="Add prompt_tokens, generated_tokens, ttft_s, tpot_s, tokens_per_s, ..."
    )


class SourceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str | None = Field(
        None, description="Text put before every input (default: the model's task prefix, e.g. T5's)"
    )


class TranslationParams(SourceParams):
    src_lang: str | None = Field(
        None, description="Source language code (en); also from the task name translation_en_to_de"
    )
    tgt_lang: str | None = Field(None, description="Target language code (de)")


class OutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_metrics: bool = Field(
        False, description="Add prompt_tokens, generated_tokens, ttft_s, tpot_s, tokens_per_s, ..."
    )


DEFAULT_SENTENCES = 3


class SummarizeParams(GenerationConfig):
    """Decoding controls (abstractive) and how much to keep (extractive)."""

    num_sentences: int | None = Field(
        None, ge=1, description=f"Extractive: sentences kept (default {DEFAULT_SENTENCES})"
    )
    ratio: float | None = Field(None, gt=0.0, le=1.0, description="Extractive: fraction of the sentences kept")

    @model_validator(mode="after")
    def _one_size(self) -> SummarizeParams:
        if self.num_sentences is not None and self.ratio is not None:
            raise ValueError("give num_sentences or ratio, not both")
        return self
