"""Model resolution (hub id, local directory, packaged model) and the cache of loaded models."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelNotAvailableError, ParamError
from .registry import Registry

PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.h5", "*.msgpack", "*.ot"]
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class ModelSource:
    """Everything a model loader needs: where the files are and how to load them."""

    model_id: str
    path: Path
    revision: str | None = None
    device: str = "cpu"
    dtype: torch.dtype | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' `from_pretrained` that apply taskhub's safety defaults:
        safetensors only unless `allow_pickle`, remote code only if `trust_remote_code`, the dtype asked for."""
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if not self.allow_pickle:
            kwargs["use_safetensors"] = True
        if self.dtype is not None:
            kwargs["dtype"] = self.dtype
        return kwargs


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`"bfloat16"`, `"bf16"`, a torch.dtype or None (the model's own)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ParamError(f"Unknown dtype {dtype!r}. Expected one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def default_device(device: str | None) -> str:
    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_model_path(model_id: str, revision: str | None, registry: Registry, allow_pickle: bool = False) -> Path:
    """A local directory (or single-file checkpoint, e.g. .gguf) holding `model_id`: given as a path,
    packaged by a plugin, or from the hub cache."""
    local = Path(model_id).expanduser()
    if local.is_dir() or local.is_file():
        return local
    if model_id in registry.local_models and revision in (None, "main"):
        return registry.local_models.get(model_id)
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise ModelNotAvailableError(f"Model directory {model_id!r} does not exist.")
    return _hub_snapshot(model_id, revision, allow_pickle)


def _hub_snapshot(model_id: str, revision: str | None, allow_pickle: bool) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(
            snapshot_download(
                model_id,
                revision=revision,
                local_files_only=offline,
                ignore_patterns=None if allow_pickle else PICKLE_PATTERNS,
            )
        )
    except Exception as exc:
        how = (
            f"Fetch it where there is network (`hf download {model_id}`) and copy the Hugging Face cache here, "
            f"or pass a local directory with model=PATH."
        )
        state = (
            "offline mode (HF_HUB_OFFLINE=1) and not in the local cache"
            if offline
            else f"could not be downloaded ({type(exc).__name__})"
        )
        raise ModelNotAvailableError(f"Model {model_id!r} is not available: {state}. {how}") from exc


class ModelCache:
    """Loaded models keyed by (id, revision, loader, device, dtype, options): each loads once."""

    def __init__(self) -> None:
        self._models: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def load(self, registry: Registry, loader_name: str, source: ModelSource) -> Any:
        key = (
            source.model_id,
            source.revision,
            loader_name,
            source.device,
            str(source.dtype),
            source.trust_remote_code,
            source.allow_pickle,
            json.dumps(source.options, sort_keys=True, default=str),
        )
        with self._lock:
            if key not in self._models:
                loader = registry.loaders.get(loader_name)
                try:
                    self._models[key] = loader(source)
                except (OSError, ValueError) as exc:
                    raise ModelNotAvailableError(
                        f"Could not load model {source.model_id!r} from {source.path} with loader {loader_name!r}: {exc}"
                    ) from exc
            return self._models[key]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


model_cache = ModelCache()
