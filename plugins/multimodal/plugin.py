"""Registers the multimodal plugin: image-to-text and image-text-to-text stages, the loader, the manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub.hookspecs import hookimpl

GENERATION_CONFIG = "taskhub_textgen.api:GenerationConfig"  # textgen's public API, imported when first used

TASKHUB_REQUIRES = ("textgen", "vision")  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register(
        "multimodal.caption_inputs",
        "taskhub_multimodal.caption:caption_inputs",
        "taskhub_multimodal.params:CaptionPromptParams",
    )
    register("multimodal.generate_caption", "taskhub_multimodal.caption:generate_captions", GENERATION_CONFIG)
    register("multimodal.caption_output", "taskhub_multimodal.caption:caption_output")
    register(
        "multimodal.chat_inputs", "taskhub_multimodal.chat:chat_inputs", "taskhub_multimodal.params:ChatInputParams"
    )
    register("multimodal.generate_chat", "taskhub_multimodal.chat:generate_chat", GENERATION_CONFIG)
    register(
        "multimodal.chat_output", "taskhub_multimodal.chat:chat_output", "taskhub_multimodal.params:ChatOutputParams"
    )


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("multimodal.image_text_model", "taskhub_multimodal.loading:load_multimodal_model")


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "multimodal")
