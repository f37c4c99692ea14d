"""The two entry points most users need: `pipeline()` and `run_task()`."""

from __future__ import annotations

import json
import threading
from typing import Any

import torch

from .pipeline import Pipeline

_pipelines: dict[tuple[Any, ...], Pipeline] = {}
_lock = threading.Lock()


def pipeline(
    task: str,
    model: str | None = None,
    *,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    **params: Any,
) -> Pipeline:
    """A Pipeline for `task`; `params` become its defaults (routed to the stages declaring them)."""
    return Pipeline(
        task,
        model,
        revision=revision,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
        **params,
    )


def run_task(
    task: str,
    inputs: Any,
    *,
    model: str | None = None,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    **params: Any,
) -> Any:
    """Run `task` on one input (one result) or a list (a list), reusing a cached pipeline."""
    key = (task, model, revision, device, str(dtype))
    with _lock:
        pipe = _pipelines.get(key)
        if pipe is None:
            pipe = _pipelines[key] = Pipeline(task, model, revision=revision, device=device, dtype=dtype)
    return pipe(inputs, **params)


def clear_caches() -> None:
    """Forget cached pipelines and loaded models (frees memory; tests use it)."""
    from .models import model_cache

    with _lock:
        _pipelines.clear()
    model_cache.clear()


def _json_default(value: Any) -> Any:
    """Make results JSON-ready: tensors and numpy values to lists and numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(result: Any, **kwargs: Any) -> str:
    return json.dumps(result, default=_json_default, ensure_ascii=False, **kwargs)
