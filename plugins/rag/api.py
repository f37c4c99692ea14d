"""The rag plugin's public face: build and inspect indexes from Python (tasks run through taskhub.pipeline)."""

from __future__ import annotations

from .build import build_index
from .store import IndexStore, data_home, index_path, list_indexes

__all__ = ["IndexStore", "build_index", "data_home", "index_path", "list_indexes"]
