"""taskhub: run any model task from YAML manifests and pluggy plugins with one call."""

from typing import TYPE_CHECKING, Any

from .api import clear_cache, clear_caches, pipeline, run_task
from .errors import (
    BadInputError,
    ManifestError,
    ModelNotAvailableError,
    ParamError,
    PluginError,
    StageError,
    TaskhubError,
    UnknownStageError,
    UnknownTaskError,
)
from .hookspecs import hookimpl
from .input_kinds import InputKind, read_json, read_utf8
from .manifest import JobInputs, JobManifest, StageRef, TaskManifest
from .models import ModelSource
from .pipeline import Pipeline, StageContext
from .plugins import PluginStatus, get_registry, plugin_statuses, register_plugin, unregister_plugin

if TYPE_CHECKING:
    from .batch import BatchReader, BatchWriter, Item, run_job

_BATCH_NAMES = ("BatchReader", "BatchWriter", "Item", "run_job")


def __getattr__(name: str) -> Any:
    """Batch-job names import taskhub.batch (and numpy) on first use: `import taskhub` stays quick."""
    if name in _BATCH_NAMES:
        from . import batch

        return getattr(batch, name)
    raise AttributeError(f"module 'taskhub' has no attribute {name!r}")


__all__ = [
    "BadInputError",
    "BatchReader",
    "BatchWriter",
    "InputKind",
    "Item",
    "JobInputs",
    "PluginStatus",
    "JobManifest",
    "ManifestError",
    "ModelNotAvailableError",
    "ModelSource",
    "ParamError",
    "Pipeline",
    "PluginError",
    "StageContext",
    "StageError",
    "StageRef",
    "TaskManifest",
    "TaskhubError",
    "UnknownStageError",
    "UnknownTaskError",
    "clear_cache",
    "clear_caches",
    "get_registry",
    "hookimpl",
    "pipeline",
    "plugin_statuses",
    "read_json",
    "read_utf8",
    "register_plugin",
    "run_job",
    "run_task",
    "unregister_plugin",
]
