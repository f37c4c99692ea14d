"""text-generation stages: decode prompts with the request's controls, shape results like transformers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskhub import StageContext
from taskhub.errors import ParamError

from .backend import PromptBatch
from .config import GenerationConfig, check_memory, check_token_ids, fit_prompts, with_model_defaults
from .constrain import FORMAT_FIELDS, output_format
from .engine.request import RequestHandle
from .generate import RowStream, generate, stream, stream_groups
from .generation import Generation
from .loading import TextGenModel, generation_memory_budget
from .params import TextGenerationParams, TextOutputParams
from .prompts import Prompt
from .streams import SequenceStreams


@dataclass
class Completion:
    """A prompt and the sequences generated for it."""

    prompt: Prompt
    generations: list[Generation]


def request_config(
    params: GenerationConfig, model: TextGenModel, prompt_len: int, task_defaults: dict[str, Any] | None = None
) -> GenerationConfig:
    """The caller's controls over the task's and the checkpoint's defaults, with a pad id to fill finished rows;
    token ids the caller named are checked against the model's vocabulary."""
    config = with_model_defaults(params, model.generation_config, prompt_len, task_defaults)
    check_token_ids(config, model.vocab_size, params.model_fields_set)
    if config.pad_token_id is None:
        config = config.model_copy(update={"pad_token_id": model.pad_token_id})
    return config


def generate_text(items: list[Prompt], params: TextGenerationParams, ctx: StageContext) -> list[Any]:
    """Stage `textgen.generate`: one Completion per prompt, or one text stream per prompt with stream=True
    (a SequenceStreams, one stream per sequence, with num_return_sequences > 1).

    Native decoders submit every prompt to the model's engine (each request with its own
    controls, as if alone); beam search and transformers-backed models decode static
    batches of the task's batch_size, sorted by length.
    """
    model: TextGenModel = ctx.model
    if model.is_encoder_decoder:
        raise ParamError(
            "text-generation needs a decoder-only model; use text2text-generation for encoder-decoder models."
        )
    if any(p.response_format is not None for p in items):  # per-item formats: one decode per distinct format
        return _generate_per_format(items, params, ctx)
    config = request_config(params, model, max(len(p.ids) for p in items))
    prompts = fit_prompts([p.ids for p in items], config.max_new_tokens, model.context, params.truncation)
    engine = model.engine()
    if engine is not None and config.num_beams == 1:
        configs = [request_config(params, model, len(ids)) for ids in prompts]
        handles = [engine.submit(ids, c, stream=params.stream) for ids, c in zip(prompts, configs)]
        if params.stream:
            return [
                h if c.num_return_sequences == 1 else SequenceStreams(h, c.num_return_sequences)
                for h, c in zip(handles, configs)
            ]
        return [Completion(prompt, with_format(handle.result(), config)) for prompt, handle in zip(items, handles)]
    size = ctx.task.batching.batch_size
    order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))
    out: list[Any] = [None] * len(items)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        results = _generate_static([items[i] for i in chunk], [prompts[i] for i in chunk], params, model)
        for i, result in zip(chunk, results):
            out[i] = result
    return out


def _generate_static(
    items: list[Prompt], prompts: list[list[int]], params: TextGenerationParams, model: TextGenModel
) -> list[Any]:
    """One left-padded batch of `prompts` (the items' ids, fitted to the context) through generate() or stream()."""
    longest = max(len(ids) for ids in prompts)
    config = request_config(params, model, longest)
    rows = len(prompts) * max(config.num_beams, config.num_return_sequences)
    check_memory(rows, longest, config.max_new_tokens, model.kv_bytes_per_token, generation_memory_budget())
    batch = PromptBatch.left_padded(prompts, model.pad_token_id, model.device)
    if params.stream:
        n = config.num_return_sequences
        if n == 1:
            return stream(model.make_backend(), batch, config, model.tokenizer)
        return [
            SequenceStreams(group, n) for group in stream_groups(model.make_backend(), batch, config, model.tokenizer)
        ]
    results = generate(model.make_backend(), batch, config, model.tokenizer)
    return [Completion(prompt, with_format(gens, config)) for prompt, gens in zip(items, results)]


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


def with_format(generations: list[Generation], config: GenerationConfig) -> list[Generation]:
    """The sequences, each marked with the output format it was constrained to (record() then adds
    finish_reason, parsed and error)."""
    fmt = output_format(config)
    for generation in generations:
        generation.output_format = fmt
    return generations


def record(generation: Generation, key: str, text: Any, return_metrics: bool) -> dict[str, Any]:
    """One result dict: {key: text}, with structured output finish_reason, parsed (JSON) and error,
    logprobs when asked for, metrics when asked for."""
    out: dict[str, Any] = {key: text}
    fmt = generation.output_format
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
        if isinstance(item, (RowStream, RequestHandle, SequenceStreams)):
            out.append(item)
            continue
        out.append(
            [
                record(
                    g,
                    "generated_text",
                    full_text(item.prompt, g.text or "") if params.return_full_text else g.text,
                    params.return_metrics,
                )
                for g in item.generations
            ]
        )
    return out
