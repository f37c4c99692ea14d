"""The on-disk index: a LanceDB table of chunks (text, offsets, metadata, vector) plus a JSON card of how it was built."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from taskhub.errors import BadInputError, TaskhubError

CARD_FILE = "taskhub-index.json"
TABLE = "chunks"
FORMAT = 1
INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
COLUMNS = ("chunk_id", "doc_id", "n", "text", "source", "start", "end", "metadata", "content_hash", "embedding_model")


class IndexNotFoundError(TaskhubError):
    """An INDEX that names no built index."""


class EmbeddingModelMismatchError(TaskhubError):
    """An index queried or extended with another embedding model than it was built with."""


def data_home() -> Path:
    """taskhub's data folder: $TASKHUB_HOME, else the user's data dir (~/.local/share/taskhub on Linux)."""
    if os.environ.get("TASKHUB_HOME"):
        return Path(os.environ["TASKHUB_HOME"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("taskhub"))


def index_path(index: str | os.PathLike[str]) -> Path:
    """INDEX as a folder: a path (has a separator, starts with '.' or '~', or exists) or a bare name under data_home()/indexes."""
    text = os.fspath(index)
    if not text:
        raise BadInputError("index is empty; give a folder path or a bare index name")
    if os.sep in text or "/" in text or text.startswith((".", "~")) or Path(text).exists():
        return Path(text).expanduser()
    if not INDEX_NAME.match(text):
        raise BadInputError(f"index name {text!r}: use letters, digits, '_', '.', '-', or give a folder path")
    return data_home() / "indexes" / text


def list_indexes() -> list[Path]:
    """Every index kept under data_home()/indexes."""
    root = data_home() / "indexes"
    return sorted(p for p in root.iterdir() if (p / CARD_FILE).is_file()) if root.is_dir() else []


@dataclass(frozen=True)
class Card:
    """How an index was built; every later build and query must agree with it."""

    model: str  # embedding model id (hub id or local folder)
    revision: str | None  # its revision, as asked for
    dim: int  # vector width
    chunker: str
    chunk_tokens: int
    overlap: int
    format: int = FORMAT
    dtype: str = "float32"  # the encoder's weights when embedding (bfloat16: faster, cosine >= 0.9998 to fp32)

    @property
    def model_ref(self) -> str:
        return f"{self.model}@{self.revision or 'default'}"

    def check_model(self, model: str | None, revision: str | None, where: Path) -> None:
        """Refuse another embedding model than the index's (a None model means "the index's own")."""
        if model is None or (model == self.model and (revision or None) == (self.revision or None)):
            return
        asked = f"{model}@{revision or 'default'}"
        raise EmbeddingModelMismatchError(
            f"index {where} holds embeddings of {self.model_ref}; it cannot be used with {asked}. "
            "Query it with its own model (leave model unset) or build a new index."
        )


class IndexStore:
    """One index folder: the card and the LanceDB `chunks` table (opened lazily, always reading the latest version)."""

    def __init__(self, path: Path, card: Card) -> None:
        self.path = path
        self.card = card
        self._table: Any = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, index: str | os.PathLike[str]) -> IndexStore:
        path = index_path(index)
        card_file = path / CARD_FILE
        if not card_file.is_file():
            raise IndexNotFoundError(
                f"no index at {path}; build one with: taskhub index build {os.fspath(index)} --inputs 'docs/**/*.md'"
            )
        try:
            data = json.loads(card_file.read_text(encoding="utf-8"))
            return cls(path, Card(**data))
        except (ValueError, TypeError) as exc:
            raise TaskhubError(f"{card_file} is not a taskhub index card: {exc}") from exc

    @classmethod
    def create(cls, index: str | os.PathLike[str], card: Card) -> IndexStore:
        """Write the card (atomically); the table is created on the first write."""
        path = index_path(index)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{CARD_FILE}.{os.getpid()}.tmp"  # per process: parallel job workers may create it at once
        tmp.write_text(json.dumps(card.__dict__, indent=2), encoding="utf-8")
        os.replace(tmp, path / CARD_FILE)
        return cls(path, card)

    def delete(self) -> None:
        shutil.rmtree(self.path)

    # -- the table -------------------------------------------------------------------------
    def _db(self) -> Any:
        os.environ.setdefault("LANCE_LOG", "error")  # lance logs deprecation notices to stderr as WARN
        try:
            import lancedb
        except ImportError as exc:
            raise TaskhubError(
                f'the rag plugin stores indexes with LanceDB: pip install "taskhub[rag]" ({exc})'
            ) from exc

        return lancedb.connect(self.path, read_consistency_interval=timedelta(0))

    def _db_at_rest(self) -> Any:
        """A connection whose tables never look for newer versions (for handles pinned to one)."""
        import lancedb

        return lancedb.connect(self.path)

    def table(self) -> Any:
        """The chunks table, or None before the first chunk was written."""
        with self._lock:
            if self._table is None:
                db = self._db()
                if TABLE in db.list_tables().tables:
                    self._table = db.open_table(TABLE)
            return self._table

    @property
    def version(self) -> int:
        table = self.table()
        return 0 if table is None else int(table.version)

    def version_stamp(self) -> int | None:
        """When the table's version list last changed (ns), from one stat: every commit adds a manifest to
        `_versions/`, so an unchanged stamp means an unchanged table (None: no table yet)."""
        try:
            return os.stat(self.path / f"{TABLE}.lance" / "_versions").st_mtime_ns
        except OSError:
            return None

    def table_at(self, version: int) -> Any:
        """A read-only handle on the table as of `version` (searches on it never check for newer versions)."""
        if self.table() is None:
            return None
        table = self._db_at_rest().open_table(TABLE)
        table.checkout(version)
        return table

    def count(self) -> int:
        table = self.table()
        return 0 if table is None else int(table.count_rows())

    def doc_hashes(self) -> dict[str, str]:
        """doc_id -> content hash of every document in the index."""
        table = self.table()
        if table is None:
            return {}
        rows = _scan(table, ["doc_id", "content_hash"])
        return dict(zip(rows["doc_id"].to_pylist(), rows["content_hash"].to_pylist()))

    def write(self, remove_docs: list[str], rows: Any) -> None:
        """Drop the chunks of `remove_docs`, then append `rows` (a pyarrow table): two atomic commits.

        Killed between them, the documents are missing and the next build adds them again;
        killed inside one, that commit never happened. Either way no chunk is there twice.
        """
        table = self.table()
        if table is not None and remove_docs:
            table.delete(_in_list("doc_id", remove_docs))
        if rows is None or rows.num_rows == 0:
            return
        if table is None:
            with self._lock:
                db = self._db()
                try:
                    self._table = db.create_table(TABLE, rows)
                    return
                except ValueError:  # another process (a parallel job worker) created it first
                    if TABLE not in db.list_tables().tables:
                        raise
                    table = self._table = db.open_table(TABLE)
        table.add(rows)

    def finish(self, ann: bool) -> None:
        """After a build: the BM25 index over text, the ANN index if asked, compaction of small writes."""
        from lancedb.index import FTS, IvfFlat

        table = self.table()
        if table is None:
            return
        table.optimize()
        table.create_index("text", config=FTS(with_position=False), replace=True)
        if ann:
            table.create_index("vector", config=IvfFlat(distance_type="cosine"), replace=True)

    def has_ann(self, table: Any = None) -> bool:
        """Whether `table` (default: the latest version) has an IVF vector index."""
        table = table if table is not None else self.table()
        return table is not None and any(i.index_type.upper().startswith("IVF") for i in table.list_indices())

    def columns(self) -> tuple[Any, np.ndarray]:
        """Every chunk's fields (a pyarrow table without vectors) and its vectors as an [N, dim] float32 matrix."""
        table = self.table()
        return self.rows(table), self.vectors(table)

    def rows(self, table: Any) -> Any:
        """Every chunk's fields but its vector (a pyarrow table) in `table` (a handle; None: no table yet)."""
        return None if table is None else _scan(table, list(COLUMNS))

    def vectors(self, table: Any) -> np.ndarray:
        """Every chunk's vector in `table`, in row order, as an [N, dim] float32 matrix."""
        if table is None:
            return np.zeros((0, self.card.dim), dtype=np.float32)
        data = _scan(table, ["vector"])
        return data["vector"].combine_chunks().values.to_numpy().reshape(data.num_rows, self.card.dim)

    def info(self) -> dict[str, Any]:
        table = self.table()
        docs = len(self.doc_hashes())
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "index": str(self.path),
            "documents": docs,
            "chunks": self.count(),
            "embedding_model": self.card.model,
            "revision": self.card.revision,
            "dim": self.card.dim,
            "chunker": self.card.chunker,
            "chunk_tokens": self.card.chunk_tokens,
            "overlap": self.card.overlap,
            "dtype": self.card.dtype,
            "version": self.version,
            "ann_index": self.has_ann(),
            "bytes": size,
            "indices": [] if table is None else [i.name for i in table.list_indices()],
        }


def _scan(table: Any, columns: list[str]) -> Any:
    """These columns of every row, as a pyarrow table."""
    return table.search().select(columns).limit(None).to_arrow()


def _in_list(column: str, values: list[str]) -> str:
    """A SQL `column IN (...)` filter with the values quoted safely."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"
