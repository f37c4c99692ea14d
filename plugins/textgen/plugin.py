"""Registers the textgen plugin: generation stages, model loaders, manifests."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files

from taskhub import read_utf8
from taskhub.hookspecs import hookimpl

from .config import GenerationConfig
from .messages import is_chat_input, is_conversation

TASKHUB_REQUIRES = ("text",)  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    # text-generation
    register("textgen.prepare_prompt", "taskhub_textgen.prompts:prepare_prompt", "taskhub_textgen.params:PromptParams")
    register("textgen.generate", "taskhub_textgen.stages:generate_text", "taskhub_textgen.params:TextGenerationParams")
    register("textgen.text_output", "taskhub_textgen.stages:text_output", "taskhub_textgen.params:TextOutputParams")
    # text2text-generation, translation
    register("textgen.source_inputs", "taskhub_textgen.seq2seq:source_inputs", "taskhub_textgen.params:SourceParams")
    register(
        "textgen.translation_inputs",
        "taskhub_textgen.seq2seq:translation_inputs",
        "taskhub_textgen.params:TranslationParams",
    )
    register("textgen.generate_seq2seq", "taskhub_textgen.seq2seq:generate_seq2seq", GenerationConfig)
    register("textgen.generated_text", "taskhub_textgen.seq2seq:generated_text", "taskhub_textgen.params:OutputParams")
    register(
        "textgen.translation_text", "taskhub_textgen.seq2seq:translation_text", "taskhub_textgen.params:OutputParams"
    )
    # summarization
    register(
        "textgen.summary_inputs", "taskhub_textgen.summarize:summary_inputs", "taskhub_textgen.params:SourceParams"
    )
    register("textgen.summarize", "taskhub_textgen.summarize:summarize", "taskhub_textgen.params:SummarizeParams")
    register("textgen.summary_text", "taskhub_textgen.seq2seq:summary_text", "taskhub_textgen.params:OutputParams")


def read_chat(data: bytes, source: str) -> object:
    """A chat file (a CLI INPUT file, stdin, a job's `files:` item) is read like chat text on the command line."""
    return parse_chat(read_utf8(data, source))


def parse_chat(text: str) -> object:
    """Chat text: a JSON list of messages or mapping if it is one, else the prompt itself (so a prompt file just works)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (list, dict)) else text


@hookimpl
def register_input_kinds(register: Callable[..., None]) -> None:
    register(
        "chat",
        "a string, a list of {'role', 'content'} messages, or a mapping of fields",
        is_chat_input,
        is_conversation,
        read=read_chat,
        parse=parse_chat,
    )


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("textgen.generative_lm", "taskhub_textgen.loading:load_generative_lm")
    register("textgen.summarizer", "taskhub_textgen.summarize:load_summarizer")


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "textgen")
