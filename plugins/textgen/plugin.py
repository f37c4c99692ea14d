"""Registers the textgen plugin: generation stages, model loaders, manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub.hookspecs import hookimpl

from . import prompts, seq2seq, stages, summarize
from .config import GenerationConfig
from .loading import load_generative_lm

TASKHUB_REQUIRES = ("text",)  # plugins whose public API or stages this one uses


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    # text-generation
    register("textgen.prepare_prompt", prompts.prepare_prompt, prompts.PromptParams)
    register("textgen.generate", stages.generate_text, stages.TextGenerationParams)
    register("textgen.text_output", stages.text_output, stages.TextOutputParams)
    # text2text-generation, translation
    register("textgen.source_inputs", seq2seq.source_inputs, seq2seq.SourceParams)
    register("textgen.translation_inputs", seq2seq.translation_inputs, seq2seq.TranslationParams)
    register("textgen.generate_seq2seq", seq2seq.generate_seq2seq, GenerationConfig)
    register("textgen.generated_text", seq2seq.output_as("generated_text"), seq2seq.OutputParams)
    register("textgen.translation_text", seq2seq.output_as("translation_text"), seq2seq.OutputParams)
    # summarization
    register("textgen.summary_inputs", summarize.summary_inputs, seq2seq.SourceParams)
    register("textgen.summarize", summarize.summarize, summarize.SummarizeParams)
    register("textgen.summary_text", seq2seq.output_as("summary_text"), seq2seq.OutputParams)


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("textgen.generative_lm", load_generative_lm)
    register("textgen.summarizer", summarize.load_summarizer)


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "textgen")
