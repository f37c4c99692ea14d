"""image-text-to-text inputs: a chat with image parts, or {"image", "text"}, checked and turned into model prompts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from jinja2 import TemplateError
from PIL import Image
from taskhub_vision.api import describe, load_image, map_in_threads

from taskhub.errors import BadInputError

from .loading import MultimodalModel

IMAGE_KEYS = ("image", "url", "path")  # where HF's chat format puts an image part's source
OBJECT_KEYS = ("image", "images", "text")
CHAT_EXPECTED = (
    'a chat: [{"role": "user", "content": [{"type": "image", "image": <path|bytes|PIL|array>}, '
    '{"type": "text", "text": "..."}]}], or {"image": ..., "text": "..."}'
)


@dataclass
class ChatPrompt:
    """One input as the model sees it, and what the output echoes back."""

    input_ids: list[int]
    image_inputs: dict[str, torch.Tensor]  # processor outputs besides the ids, per prompt (no batch dim added)
    echo: Any  # the input as HF echoes it: the messages, or the object's text
    is_chat: bool
    continue_final: bool  # the model continues the last (assistant) message instead of answering it

    def __len__(self) -> int:
        return len(self.input_ids)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


@dataclass
class ParsedInput:
    """One input after its shape was checked, before any image is decoded."""

    sources: list[Any]  # image values (path, bytes, PIL, array), in order
    echo: Any  # what the output's input_text shows: the messages, or the text
    messages: list[dict[str, Any]] | None  # the chat; None for a text or {"image", "text"} input
    text: str | None  # the text of a text or {"image", "text"} input


def _image_source(part: dict[str, Any], where: str) -> Any:
    found = [key for key in IMAGE_KEYS if part.get(key) is not None]
    if not found:
        raise BadInputError(f"{where} is an image part without an image; give one of {', '.join(IMAGE_KEYS)}.")
    return part[found[0]]


def _check_chat(messages: list[Any], index: int) -> list[Any]:
    """The image sources of a chat, in order; any malformed message or part is a BadInputError."""
    sources = []
    for m, message in enumerate(messages):
        where = f"Input {index}, message {m}"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise BadInputError(f"{where} is not a {{'role', 'content'}} message; expected {CHAT_EXPECTED}.")
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BadInputError(
                f"{where} has content of type {type(content).__name__}; expected a string or a list of parts."
            )
        for p, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                sources.append(_image_source(part, f"{where}, part {p}"))
            elif kind != "text" or not isinstance(part.get("text"), str):
                raise BadInputError(
                    f"{where}, part {p} is {part!r}; expected {{'type': 'text', 'text': str}} or {{'type': 'image', 'image': ...}}."
                )
    return sources


def _object_parts(item: dict[str, Any], index: int) -> tuple[list[Any], str]:
    """(image sources, text) of a {"image"/"images", "text"} input."""
    unknown = sorted(set(item) - set(OBJECT_KEYS))
    if unknown:
        raise BadInputError(f"Input {index} has unknown fields {unknown}; expected {CHAT_EXPECTED}.")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadInputError(f"Input {index} has no 'text' (got {text!r}); expected {CHAT_EXPECTED}.")
    images = item.get("images", item.get("image"))
    if images is None:
        return [], text
    return (list(images) if isinstance(images, (list, tuple)) else [images]), text


def _echo_chat(messages: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    """The messages as given, with images that are not JSON (PIL, arrays, bytes) named instead."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [_echo_part(part, index) for part in content]
        out.append({**message, "content": content})
    return out


def _echo_part(part: dict[str, Any], index: int) -> dict[str, Any]:
    if part["type"] != "image":
        return part
    return {k: _echo_image(v, index) if k in IMAGE_KEYS else v for k, v in part.items()}


def _echo_image(value: Any, index: int) -> Any:
    """Paths as strings; a PIL image, array or bytes by what it is (results stay JSON-ready)."""
    if isinstance(value, str):
        return value
    return os.fspath(value) if isinstance(value, os.PathLike) else describe(value, index)


def _with_images(messages: list[dict[str, Any]], images: list[Image.Image]) -> list[dict[str, Any]]:
    """The messages with every image part holding its loaded PIL image, for the processor's chat template."""
    loaded = iter(images)
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image", "image": next(loaded)} if part["type"] == "image" else part for part in content
            ]
        out.append({**message, "content": content})
    return out


def parse(item: Any, index: int) -> ParsedInput:
    """Check one input's shape; a string is a text-only prompt, a dict is {"image"/"images", "text"}."""
    if isinstance(item, str):
        return ParsedInput([], item, None, item)
    if isinstance(item, dict):
        sources, text = _object_parts(item, index)
        return ParsedInput(sources, text, None, text)
    if isinstance(item, list) and item:
        return ParsedInput(_check_chat(item, index), _echo_chat(item, index), item, None)
    raise BadInputError(f"Input {index} is a {type(item).__name__}; expected {CHAT_EXPECTED}.")


def decode_images(parsed: list[ParsedInput]) -> list[list[Image.Image]]:
    """Every input's images, decoded concurrently on vision's pool; errors name the input."""
    flat = [(i, source) for i, p in enumerate(parsed) for source in p.sources]
    images = map_in_threads(lambda pair: load_image(pair[1], pair[0]), flat)
    out: list[list[Image.Image]] = [[] for _ in parsed]
    for (i, _), image in zip(flat, images):
        out[i].append(image)
    return out


def build_prompt(
    mm: MultimodalModel, index: int, parsed: ParsedInput, images: list[Image.Image], continue_final_message: bool | None
) -> ChatPrompt:
    """Token ids and image tensors from the processor; chats (and objects, as one user turn) go through its chat template."""
    processor = mm.processor
    assert processor is not None, "checked by the stage"
    messages, continue_final = parsed.messages, False
    if messages is None and processor.chat_template is not None:
        parts = [*({"type": "image"} for _ in images), {"type": "text", "text": parsed.text}]
        messages = [{"role": "user", "content": parts}]
    elif messages is not None:
        if processor.chat_template is None:
            raise BadInputError(f"Input {index} is a chat, but this model's processor has no chat template.")
        last_is_assistant = messages[-1]["role"] == "assistant"
        continue_final = last_is_assistant if continue_final_message is None else continue_final_message
    try:
        if messages is None:
            encoded = processor(images=images or None, text=parsed.text, return_tensors="pt")
        else:
            encoded = processor.apply_chat_template(
                _with_images(messages, images),
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
    except (ValueError, TemplateError) as exc:
        raise BadInputError(f"Input {index} does not fit this model's processor: {exc}") from None
    tensors = {
        k: v for k, v in encoded.items() if isinstance(v, torch.Tensor) and k not in ("input_ids", "attention_mask")
    }
    return ChatPrompt(
        encoded["input_ids"][0].tolist(), tensors, parsed.echo, parsed.messages is not None, continue_final
    )
