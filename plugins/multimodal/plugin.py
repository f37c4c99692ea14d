"""Registers the multimodal plugin: image-to-text and image-text-to-text stages, the loader, the manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub_textgen.api import GenerationConfig

from taskhub.hookspecs import hookimpl

from . import caption, chat
from .loading import load_multimodal_model

TASKHUB_REQUIRES = (
    "textgen",
    "vision",
)  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("multimodal.caption_inputs", caption.caption_inputs, caption.CaptionPromptParams)
    register("multimodal.generate_caption", caption.generate_captions, GenerationConfig)
    register("multimodal.caption_output", caption.caption_output)
    register("multimodal.chat_inputs", chat.chat_inputs, chat.ChatInputParams)
    register("multimodal.generate_chat", chat.generate_chat, GenerationConfig)
    register("multimodal.chat_output", chat.chat_output, chat.ChatOutputParams)


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("multimodal.image_text_model", load_multimodal_model)


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "multimodal")
