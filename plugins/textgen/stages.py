"""text-generation stages: decode prompts with the request's controls, shape results like transformers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskhub import StageContext
from taskhub.errors import ParamError

from .backend import PromptBatch
from .config import GenerationConfig, with_model_defaults
from .constrain import FORMAT_FIELDS, OutputFormat, output_format
from .generate import Generation, RowStream, generate, stream
from .loading import TextGenModel
from .prompts import Prompt


class TextGenerationParams(GenerationConfig):
    """Every decoding control, plus streaming."""

    stream: bool = Field(False, description="Return an iterator of text deltas per input instead of the result")


@dataclass
class Completion:
    """A prompt and the sequences generated for it."""

    prompt: Prompt
    generations: list[Generation]
    output_format: OutputFormat | None = None  # structured output: results gain parsed / error


def request_config(
    params: GenerationConfig, model: TextGenModel, prompt_len: int, task_defaults: dict[str, Any] | None = None
) -> GenerationConfig:
    """The caller's controls over the task's and the checkpoint's defaults, with a pad id to fill finished rows."""
    config = with_model_defaults(params, model.generation_config, prompt_len, task_defaults)
    if config.pad_token_id is None:
        config = config.model_copy(update={"pad_token_id": model.pad_token_id})
    return config


def generate_text(items: list[Prompt], params: TextGenerationParams, ctx: StageContext) -> list[Any]:
    """Stage `textgen.generate`: one Completion per prompt, or one RowStream with stream=True."""
    model: TextGenModel = ctx.model
    if model.is_encoder_decoder:
        raise ParamError(
            "text-generation needs a decoder-only model; use text2text-generation for encoder-decoder models."
        )
    if any(p.response_format is not None for p in items):  # per-item formats: one decode per distinct format
        return _generate_per_format(items, params, ctx)
    batch = PromptBatch.left_padded([p.ids for p in items], model.pad_token_id, model.device)
    config = request_config(params, model, batch.input_ids.shape[1])
    if params.stream:
        if config.num_return_sequences != 1:
            raise ParamError("stream=True gives one sequence per input; num_return_sequences must be 1.")
        return stream(model.make_backend(), batch, config, model.tokenizer)
    results = generate(model.make_backend(), batch, config, model.tokenizer)
    fmt = output_format(config)
    return [Completion(prompt, gens, fmt) for prompt, gens in zip(items, results)]


def _generate_per_format(items: list[Prompt], params: TextGenerationParams, ctx: StageContext) -> list[Any]:
    """Prompts that carry their own response_format (batch jobs' response_format_field), grouped by format."""
    if params.stream:
        raise ParamError("stream=True does not combine with per-item response formats.")
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(items):
        groups.setdefault(repr(prompt.response_format), []).append(i)
    out: list[Any] = [None] * len(items)
    for indices in groups.values():
        group_params = params
        if items[indices[0]].response_format is not None:  # the item's format replaces the call's
            fields = {name: None for name in FORMAT_FIELDS} | {"response_format": items[indices[0]].response_format}
            group_params = TextGenerationParams.model_validate(
                {name: getattr(params, name) for name in params.model_fields_set} | fields
            )
        group = [Prompt(items[i].ids, items[i].source) for i in indices]
        for i, completion in zip(indices, generate_text(group, group_params, ctx)):
            out[i] = completion
    return out


class TextOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_full_text: bool = Field(True, description="Prompt + generated text (chat: the messages + the reply)")
    return_metrics: bool = Field(
        False, description="Add prompt_tokens, generated_tokens, ttft_s, tpot_s, tokens_per_s, ..."
    )


def record(
    generation: Generation, key: str, text: Any, return_metrics: bool, fmt: OutputFormat | None = None
) -> dict[str, Any]:
    """One result dict: {key: text}, with structured output finish_reason, parsed (JSON) and error,
    logprobs when asked for, metrics when asked for."""
    out: dict[str, Any] = {key: text}
    if fmt is not None:
        out["finish_reason"] = generation.finish_reason
        out.update(fmt.shape(generation.text or "", generation.finish_reason))
    if generation.logprobs is not None:
        out["logprobs"] = generation.logprobs
    if return_metrics:
        out.update(generation.metrics)
    return out


def full_text(prompt: Prompt, text: str) -> Any:
    """What transformers returns with return_full_text: the prompt text + output, or the messages + the reply."""
    if isinstance(prompt.source, str):
        return prompt.source + text
    return [*prompt.source, {"role": "assistant", "content": text}]


def text_output(items: list[Any], params: TextOutputParams, ctx: StageContext) -> list[Any]:
    """Stage `textgen.text_output`: [{"generated_text": ...}] per input; streams pass through."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, RowStream):
            out.append(item)
            continue
        out.append(
            [
                record(
                    g,
                    "generated_text",
                    full_text(item.prompt, g.text or "") if params.return_full_text else g.text,
                    params.return_metrics,
                    item.output_format,
                )
                for g in item.generations
            ]
        )
    return out
