"""image-text-to-text stages: chats with images -> prompts, answers through textgen, output shaped like HF's pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from taskhub_textgen.api import GenerationConfig, with_model_defaults

from taskhub import StageContext
from taskhub.errors import ParamError

from .decoding import generate_for_prompts, group_by
from .loading import MultimodalModel
from .params import ChatInputParams, ChatOutputParams
from .prompts import ChatPrompt, build_prompt, decode_images, parse


@dataclass
class ChatAnswer:
    """A prompt and its generated texts (num_return_sequences, best first)."""

    prompt: ChatPrompt
    texts: list[str]


def chat_inputs(items: list[Any], params: ChatInputParams, ctx: StageContext) -> list[ChatPrompt]:
    """Stage `multimodal.chat_inputs`: check every input, decode its images, run the model's processor."""
    mm: MultimodalModel = ctx.model
    if mm.kind != "decoder-only" or mm.processor is None:
        raise ParamError(
            f"{type(mm.model).__name__} is a captioning model; use the image-to-text task (with prompt=...) for it."
        )
    parsed = [parse(item, i) for i, item in enumerate(items)]
    images = decode_images(parsed)
    return [
        build_prompt(mm, i, p, imgs, params.continue_final_message) for i, (p, imgs) in enumerate(zip(parsed, images))
    ]


def generate_chat(items: list[ChatPrompt], params: GenerationConfig, ctx: StageContext) -> list[ChatAnswer]:
    """Stage `multimodal.generate_chat`: prompts whose image tensors have equal shapes decode as one batch."""
    mm: MultimodalModel = ctx.model
    out: list[Any] = [None] * len(items)  # every index is filled by exactly one group
    keys = [tuple((k, tuple(v.shape)) for k, v in item.image_inputs.items()) for item in items]
    for group in group_by(keys):
        chosen = [items[i] for i in group]
        prompt_len = max(len(item) for item in chosen)
        config = with_model_defaults(params, mm.model.generation_config, prompt_len)
        inputs = {key: torch.stack([item.image_inputs[key] for item in chosen]) for key in chosen[0].image_inputs}
        results = generate_for_prompts(mm, [item.input_ids for item in chosen], inputs, config)
        for i, item, generations in zip(group, chosen, results):
            out[i] = ChatAnswer(item, [g.text or "" for g in generations])
    return out


def full_text(prompt: ChatPrompt, answer: str) -> Any:
    """HF's return_full_text: the chat with the answer as a new assistant message (or appended to the
    message it continues), or the prompt text followed by the answer."""
    if not prompt.is_chat:
        return prompt.echo + answer
    messages = list(prompt.echo)
    if not prompt.continue_final:
        return [*messages, {"role": "assistant", "content": answer}]
    last = messages[-1]
    content = last["content"]
    if isinstance(content, str):
        content = content + answer
    else:
        content = [*content[:-1], {**content[-1], "text": content[-1]["text"] + answer}]
    return [*messages[:-1], {"role": last["role"], "content": content}]


def chat_output(items: list[ChatAnswer], params: ChatOutputParams, ctx: StageContext) -> list[list[dict[str, Any]]]:
    """Stage `multimodal.chat_output`: [{"input_text", "generated_text"}] per answer, as HF's pipeline returns."""
    return [
        [
            {
                "input_text": answer.prompt.echo,
                "generated_text": full_text(answer.prompt, text) if params.return_full_text else text,
            }
            for text in answer.texts
        ]
        for answer in items
    ]
