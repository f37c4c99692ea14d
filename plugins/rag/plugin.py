"""Registers the rag plugin: retrieval and answer stages, the documents reader, the `index` command, its manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from taskhub.hookspecs import hookimpl

from . import commands

TASKHUB_REQUIRES = ("text", "textgen")  # embeds through the text tasks, decodes through textgen's public API


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("rag.retrieve", "taskhub_rag.stages:retrieval", "taskhub_rag.params:RetrievalParams")
    register("rag.retrieve_passages", "taskhub_rag.stages:retrieve_for_answer", "taskhub_rag.params:RetrievalParams")
    register("rag.answer", "taskhub_rag.stages:answer", "taskhub_rag.params:AnswerParams")
    register("rag.index_documents", "taskhub_rag.stages:index_documents", "taskhub_rag.params:IndexDocumentsParams")


@hookimpl
def register_batch_readers(register: Callable[..., None]) -> None:
    register("documents", "taskhub_rag.stages:read_documents")


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("index", commands.configure, commands.run, "build, inspect, list and delete retrieval indexes")


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "rag")
