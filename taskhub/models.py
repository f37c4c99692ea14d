"""Model resolution (hub id, local directory, packaged model), device checks and the bounded cache of loaded models."""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelNotAvailableError, ParamError, TaskhubError
from .registry import Registry

if TYPE_CHECKING:
    import torch

# What a hub download fetches: configs, tokenizer and processor files, chat templates and the
# weights format the loader will read -- never the ONNX/GGUF/OpenVINO/TF copies a repo may also hold.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.safetensors"]
PICKLE_FILES = ["pytorch_model*.bin", "*.pt", "*.pth"]  # only with allow_pickle
REMOTE_CODE_FILES = ["*.py"]  # only with trust_remote_code
DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


@dataclass(frozen=True)
class ModelSource:
    """Everything a model loader needs: where the files are and how to load them."""

    model_id: str  # as the caller or manifest named it (hub id or directory)
    path: Path  # the local directory holding the files, already resolved (downloaded if needed)
    revision: str | None = None  # hub revision asked for (None: the default branch)
    device: str = "cpu"  # a checked torch device string: "cpu", "cuda", "cuda:1", "mps"
    dtype: torch.dtype | None = None  # None: the checkpoint's own dtype
    trust_remote_code: bool = False  # the caller opted in to running the repo's Python code
    allow_pickle: bool = False  # the caller opted in to pickle-based weights (.bin/.pt)
    options: dict[str, Any] = field(default_factory=dict)  # the task manifest's model.options

    def from_pretrained_kwargs(self, weights: bool = True) -> dict[str, Any]:
        """Keyword arguments for transformers' `from_pretrained` that apply taskhub's safety flags:
        remote code only if `trust_remote_code`; for weights (`weights=True`) also safetensors only
        unless `allow_pickle`, and the dtype asked for. Tokenizers and processors take `weights=False`."""
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if weights and not self.allow_pickle:
            kwargs["use_safetensors"] = True
        if weights and self.dtype is not None:
            kwargs["dtype"] = self.dtype
        return kwargs


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`"bfloat16"`, `"bf16"`, a torch.dtype or None (the model's own)."""
    if dtype is None:
        return None
    if not isinstance(dtype, str):
        import torch

        if isinstance(dtype, torch.dtype):
            return dtype
    if not isinstance(dtype, str) or dtype not in DTYPE_NAMES:
        raise ParamError(f"Unknown dtype {dtype!r}. Expected one of: {', '.join(DTYPE_NAMES)}")
    import torch

    dtype_value: torch.dtype = getattr(torch, DTYPE_NAMES[dtype])
    return dtype_value


def check_dtype_name(dtype: str | None) -> None:
    """Validate a dtype name without importing torch (manifest checks, dry runs)."""
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ParamError(f"Unknown dtype {dtype!r}. Expected one of: {', '.join(DTYPE_NAMES)}")


def check_device_name(device: str | None) -> None:
    """Validate the spelling of a device (``cpu``, ``cuda``, ``cuda:1``, ``mps``) without importing torch."""
    if device is None:
        return
    if not isinstance(device, str) or not re.fullmatch(rf"({'|'.join(DEVICE_TYPES)})(:\d{{1,3}})?", device):
        raise ParamError(
            f"Unknown device {device!r}. Expected one of: {', '.join(DEVICE_TYPES)}, optionally with an index (cuda:1)"
        )


def resolve_device(device: str | None) -> str:
    """A device this machine has: None picks cuda when available, else cpu; anything else must exist here."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device_name(device)
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return device
    available = {
        "cuda": torch.cuda.device_count,
        "mps": lambda: 1 if torch.backends.mps.is_available() else 0,
        "xpu": lambda: torch.xpu.device_count() if hasattr(torch, "xpu") else 0,
    }[kind]()
    if available == 0:
        raise ParamError(
            f"Device {device!r} is not available on this machine (no {kind} device found); use device='cpu'"
        )
    if index and int(index) >= available:
        raise ParamError(
            f"Device {device!r} does not exist: this machine has {available} {kind} device(s), 0..{available - 1}"
        )
    return device


def resolve_model_path(
    model_id: str,
    revision: str | None,
    registry: Registry,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    base: Path | None = None,
) -> Path:
    """A local directory (or single-file checkpoint, e.g. .gguf) holding `model_id`: given as a path
    (relative ones against `base`, when given), packaged by a plugin, or from the hub cache."""
    local = Path(model_id).expanduser()
    if base is not None and not local.is_absolute() and model_id.startswith("."):
        local = base / local
    if local.is_dir() or local.is_file():
        return local
    if model_id in registry.local_models and revision in (None, "main"):
        return registry.local_models.get(model_id)
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise ModelNotAvailableError(f"Model directory {str(local)!r} does not exist.")
    return _hub_snapshot(model_id, revision, hub_patterns(allow_pickle, trust_remote_code))


def hub_patterns(allow_pickle: bool, trust_remote_code: bool) -> list[str]:
    """The files a hub download fetches, given the caller's safety flags."""
    return HUB_FILES + (PICKLE_FILES if allow_pickle else []) + (REMOTE_CODE_FILES if trust_remote_code else [])


def _hub_snapshot(model_id: str, revision: str | None, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(model_id, revision=revision, local_files_only=offline, allow_patterns=patterns))
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


def cache_limit(setting: str | None) -> tuple[int | None, int | None]:
    """`TASKHUB_MODEL_CACHE`: a count of models ("4") or a size ("8GB", "500MiB"); (count, bytes)."""
    if not setting:
        return None, None
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B|B)?\s*", setting, flags=re.IGNORECASE)
    if not match:
        raise ParamError(f"TASKHUB_MODEL_CACHE={setting!r}: expected a count of models (4) or a size (8GB, 500MiB)")
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    if not unit:
        return max(number, 1), None
    powers = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}
    base = 1024 if "I" in unit else 1000
    return None, number * base ** powers[unit[0]]


def model_bytes(model: Any) -> int:
    """Bytes held in tensors by a loaded model: torch modules' parameters and buffers, and bare
    tensors, found on the object itself or one attribute (or mapping value) down."""
    import torch

    candidates = [model]
    if isinstance(model, dict):
        candidates += list(model.values())
    elif hasattr(model, "__dict__"):
        candidates += list(vars(model).values())
    tensors: dict[int, torch.Tensor] = {}
    for value in candidates:
        if isinstance(value, torch.nn.Module):
            tensors.update((id(t), t) for t in [*value.parameters(), *value.buffers()])
        elif isinstance(value, torch.Tensor):
            tensors[id(value)] = value
    return sum(t.numel() * t.element_size() for t in tensors.values())


class ModelCache:
    """Loaded models keyed by (id, revision, loader, device, dtype, flags, options): each loads
    once, under a lock of its own key (two different models load in parallel). Least recently
    used models are dropped beyond `TASKHUB_MODEL_CACHE` (a count, or bytes of tensors)."""

    def __init__(self) -> None:
        self._models: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._loading: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()  # guards the two dicts, never held while a model loads
        self._on_evict: list[Callable[[tuple[Any, ...]], None]] = []

    @staticmethod
    def key(loader_name: str, source: ModelSource) -> tuple[Any, ...]:
        return (
            source.model_id,
            str(source.path),
            source.revision,
            loader_name,
            source.device,
            str(source.dtype),
            source.trust_remote_code,
            source.allow_pickle,
            json.dumps(source.options, sort_keys=True, default=str),
        )

    def on_evict(self, callback: Callable[[tuple[Any, ...]], None]) -> None:
        """Call `callback(key)` whenever a model leaves the cache (holders of it can let go too)."""
        self._on_evict.append(callback)

    def load(self, registry: Registry, loader_name: str, source: ModelSource) -> Any:
        key = self.key(loader_name, source)
        limits = cache_limit(os.environ.get("TASKHUB_MODEL_CACHE"))  # a bad setting fails before any work
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key][0]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:  # loaded by another thread while we waited
                    self._models.move_to_end(key)
                    return self._models[key][0]
            try:
                model = registry.loaders.get(loader_name)(source)
            except BaseException as exc:
                with self._lock:
                    self._loading.pop(key, None)
                if isinstance(exc, Exception) and not isinstance(exc, TaskhubError):
                    raise ModelNotAvailableError(
                        f"Could not load model {source.model_id!r} from {source.path} with loader {loader_name!r}: "
                        f"{'' if isinstance(exc, (OSError, ValueError)) else type(exc).__name__ + ': '}{exc}"
                    ) from exc
                raise
            size = model_bytes(model)
            with self._lock:  # stored before the key's lock is forgotten: nobody loads it twice
                self._models[key] = (model, size)
                self._loading.pop(key, None)
                evicted = self._evict(key, *limits)
        for old in evicted:
            for callback in self._on_evict:
                callback(old)
        return model

    def _evict(self, keep: tuple[Any, ...], max_count: int | None, max_bytes: int | None) -> list[tuple[Any, ...]]:
        """Drop least recently used models until within the limits; `keep` (just loaded) always stays."""
        evicted = []
        while len(self._models) > 1:
            too_many = max_count is not None and len(self._models) > max_count
            too_big = max_bytes is not None and sum(size for _, size in self._models.values()) > max_bytes
            if not (too_many or too_big):
                break
            oldest = next(iter(self._models))
            if oldest == keep:
                break
            del self._models[oldest]
            evicted.append(oldest)
        return evicted

    def touch(self, key: tuple[Any, ...]) -> None:
        """Mark a cached model as just used (a caller reused it without loading)."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)

    def keys(self) -> list[tuple[Any, ...]]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            evicted = list(self._models)
            self._models.clear()
        for old in evicted:
            for callback in self._on_evict:
                callback(old)


model_cache = ModelCache()
