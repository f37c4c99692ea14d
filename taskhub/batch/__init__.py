"""Batch jobs: one task over many inputs from a job manifest, locally or on Ray, resumable."""

from .guard import OutputConflictError
from .job import run_job
from .readers import BatchReader, Item
from .writers import BatchWriter, JsonlWriter, ParquetWriter

__all__ = ["BatchReader", "BatchWriter", "Item", "JsonlWriter", "OutputConflictError", "ParquetWriter", "run_job"]
