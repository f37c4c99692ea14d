"""The two entry points most users need: `pipeline()` and `run_task()`; and `clear_cache()`."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .errors import StageError
from .models import model_cache
from .pipeline import Pipeline

if TYPE_CHECKING:
    import torch

MAX_CACHED_PIPELINES = 32  # run_task's pipelines (each small: its model lives in the model cache)
_pipelines: OrderedDict[tuple[Any, ...], Pipeline] = OrderedDict()
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
    """A Pipeline for `task`; `params` become its defaults (routed to the stages declaring them).

    `trust_remote_code` runs Python code shipped with a hub model; `allow_pickle` loads
    pickle-based weights (.bin/.pt). Both are off: only safetensors, no remote code.
    """
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
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    **params: Any,
) -> Any:
    """Run `task` on one input (one result) or a list (a list), reusing a cached pipeline.

    Safety flags as for `pipeline()`.
    """
    key = (task, model, revision, device, str(dtype), trust_remote_code, allow_pickle)
    with _lock:
        pipe = _pipelines.get(key)
        if pipe is not None:
            _pipelines.move_to_end(key)
    if pipe is not None and pipe.model_key is not None:
        model_cache.touch(pipe.model_key)
    if pipe is None:  # built outside the lock: another task's model may load meanwhile
        pipe = Pipeline(
            task,
            model,
            revision=revision,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
        with _lock:
            pipe = _pipelines.setdefault(key, pipe)
            while len(_pipelines) > MAX_CACHED_PIPELINES:
                _pipelines.popitem(last=False)
    return pipe(inputs, **params)


def _forget_pipelines_of(model_key: tuple[Any, ...]) -> None:
    """A model left the model cache: drop run_task's pipelines holding it, so its memory is freed."""
    with _lock:
        for key in [k for k, p in _pipelines.items() if p.model_key == model_key]:
            del _pipelines[key]


model_cache.on_evict(_forget_pipelines_of)


def clear_cache() -> None:
    """Forget cached pipelines and loaded models (frees their memory unless you still hold a Pipeline)."""
    with _lock:
        _pipelines.clear()
    model_cache.clear()


clear_caches = clear_cache  # the older name


def _json_default(value: Any) -> Any:
    """Make results JSON-ready: tensors and numpy values to lists and numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(result: Any, **kwargs: Any) -> str:
    """Strict JSON text of a result: NaN or infinity, a value JSON cannot hold (bytes, sets, objects) or
    nesting deeper than Python recurses is a StageError, never an invalid record or a crash."""
    try:
        return json.dumps(result, default=_json_default, ensure_ascii=False, allow_nan=False, **kwargs)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StageError(
            f"the result cannot be written as JSON ({type(exc).__name__}: {str(exc)[:160]}); a task's results "
            "must be JSON-ready: finite numbers, strings, lists, mappings (arrays and tensors become lists)"
        ) from None
