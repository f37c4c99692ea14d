"""Batch jobs: one task over many inputs from a job manifest, locally or on Ray, resumable."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .guard import OutputConflictError
    from .job import run_job
    from .readers import BatchReader, Item
    from .writers import BatchWriter, JsonlWriter, ParquetWriter

_EXPORTS = {
    "OutputConflictError": ".guard",
    "run_job": ".job",
    "BatchReader": ".readers",
    "Item": ".readers",
    "BatchWriter": ".writers",
    "JsonlWriter": ".writers",
    "ParquetWriter": ".writers",
}
__all__ = ["BatchReader", "BatchWriter", "Item", "JsonlWriter", "OutputConflictError", "ParquetWriter", "run_job"]


def __getattr__(name: str) -> Any:
    """Exports import their module on first use (the job runner pulls in numpy): loading the
    built-in batch plugin stays quick."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
