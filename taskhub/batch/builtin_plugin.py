"""The built-in batch readers and writers, registered through the same hooks a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable

from ..hookspecs import hookimpl
from .readers import read_csv, read_files, read_jsonl
from .writers import JsonlWriter, ParquetWriter


@hookimpl
def register_batch_readers(register: Callable[..., None]) -> None:
    register("files", read_files)
    register("jsonl", read_jsonl)
    register("csv", read_csv)


@hookimpl
def register_batch_writers(register: Callable[..., None]) -> None:
    register(".jsonl", JsonlWriter)
    register(".parquet", ParquetWriter)
