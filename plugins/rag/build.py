"""Index building: read documents, chunk, embed, write to the store; incremental by content hash, safe to kill."""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from taskhub.errors import BadInputError, ParamError

from .chunking import CHUNKERS, Chunk, check_sizes, chunk_document, tokenizer_offsets
from .embedder import DTYPES, Embedder, get_embedder
from .store import Card, IndexNotFoundError, IndexStore, index_path

GLOB_CHARS = "*?["
WRITE_EVERY = 512  # chunks per commit: fewer table versions, bounded memory, little lost on a kill
ANN_MIN_CHUNKS = 200_000  # from this size `ann="auto"` builds the IVF index (below it exact search is faster)
FRONT_MATTER = "---\n"


@dataclass(frozen=True)
class Document:
    """One input document: its id (path relative to the glob's root), source path, text and metadata."""

    doc_id: str
    source: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    body: int = 0  # where the text after any front matter starts; chunks come from there on

    @property
    def content_hash(self) -> str:
        blob = json.dumps([self.text, self.metadata], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut; fixed per index (the card keeps them)."""

    chunker: str = "tokens"
    chunk_tokens: int = 256
    overlap: int = 32


def glob_root(pattern: str) -> Path:
    """The folder a glob starts from (its leading parts without glob characters); ids are relative to it."""
    parts = Path(pattern).parts
    fixed = list(itertools.takewhile(lambda part: not any(c in part for c in GLOB_CHARS), parts))
    return Path(*fixed) if len(fixed) < len(parts) else Path(*fixed).parent


def find_documents(patterns: Iterable[str]) -> list[tuple[str, Path]]:
    """(doc id, path) of every file the globs match (``**`` recurses), sorted; the first match of an id wins."""
    found: dict[str, Path] = {}
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        root = glob_root(pattern)
        for name in sorted(glob.glob(pattern, recursive=True)):
            path = Path(name)
            if path.is_file():
                found.setdefault(path.relative_to(root).as_posix(), path)
    return sorted(found.items())


def read_document(doc_id: str, path: Path, extra: dict[str, Any] | None = None) -> Document:
    """A UTF-8 text file; Markdown YAML front matter (``---`` ... ``---``) becomes metadata and stays in the text."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text ({exc.reason}); the index takes text and Markdown files") from None
    metadata = {"path": doc_id, "suffix": path.suffix}
    body = 0
    if text.startswith(FRONT_MATTER):
        end = text.find("\n---", len(FRONT_MATTER))
        if end > 0:
            body = end + len("\n---")
            try:
                front = yaml.safe_load(text[len(FRONT_MATTER) : end])
            except yaml.YAMLError as exc:
                raise BadInputError(f"{path}: front matter is not valid YAML: {exc}") from None
            if isinstance(front, dict):
                metadata.update({str(k): v for k, v in front.items() if _plain(v)})
    return Document(doc_id, str(path), text, {**metadata, **(extra or {})}, body)


def _plain(value: Any) -> bool:
    """Metadata values kept for filters: scalars and lists of scalars."""
    scalar = (str, int, float, bool)
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


class IndexWriter:
    """Adds documents to one index: cut into chunks, embed, write; documents already there unchanged are skipped."""

    def __init__(
        self,
        index: str | os.PathLike[str],
        *,
        model: str | None = None,
        revision: str | None = None,
        chunking: dict[str, Any] | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        """`chunking`: any of chunker, chunk_tokens, overlap; the rest come from the index (or the defaults).
        `dtype`: the encoder's weights, float32 (default) or bfloat16; fixed per index like the model."""
        try:
            self.store: IndexStore | None = IndexStore.open(index)
        except IndexNotFoundError:
            self.store = None
        self.index = index
        if dtype is not None and dtype not in DTYPES:
            raise ParamError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.store is not None:
            self.store.card.check_model(model, revision, self.store.path)
            model, revision = self.store.card.model, self.store.card.revision
            if dtype is not None and dtype != self.store.card.dtype:
                raise ParamError(
                    f"index {self.store.path} embeds with {self.store.card.dtype} weights; got dtype={dtype}. "
                    "Build a new index to change it."
                )
            dtype = self.store.card.dtype
        self.embedder: Embedder = get_embedder(model, revision, device, dtype or "float32")
        card = self.store.card if self.store is not None else None
        base = ChunkSettings(card.chunker, card.chunk_tokens, card.overlap) if card else ChunkSettings()
        self.settings = _fit(replace(base, **(chunking or {})), self.embedder) if chunking or not card else base
        if card is not None and self.settings != base:
            raise ParamError(
                f"index {self.store.path} was built with {base}; got {self.settings}. "
                "Build a new index (or delete this one) to change how documents are cut."
            )
        self.offsets = tokenizer_offsets(self.embedder.tokenizer)
        self.hashes = self.store.doc_hashes() if self.store is not None else {}

    def open_store(self) -> IndexStore:
        if self.store is None:
            s = self.settings
            card = Card(
                self.embedder.model_id,
                self.embedder.revision,
                self.embedder.dim,
                s.chunker,
                s.chunk_tokens,
                s.overlap,
                dtype=self.embedder.dtype,
            )
            self.store = IndexStore.create(self.index, card)
        return self.store

    def is_current(self, doc: Document) -> bool:
        return self.hashes.get(doc.doc_id) == doc.content_hash

    def chunks(self, doc: Document) -> list[Chunk]:
        s = self.settings
        chunks = chunk_document(doc.text[doc.body :], s.chunker, self.offsets, s.chunk_tokens, s.overlap)  # type: ignore[arg-type]
        return [replace(c, start=c.start + doc.body, end=c.end + doc.body) for c in chunks]

    def write(self, docs: list[tuple[Document, list[Chunk]]]) -> int:
        """Replace these documents' chunks in one delete and one append; returns chunks written."""
        import pyarrow as pa

        store = self.open_store()
        texts = [c.text for _, chunks in docs for c in chunks]
        vectors = self.embedder.embed(texts)
        rows: dict[str, list[Any]] = {
            name: []
            for name in ("chunk_id", "doc_id", "n", "text", "source", "start", "end", "metadata", "content_hash")
        }
        for doc, chunks in docs:
            digest = doc.content_hash
            for n, chunk in enumerate(chunks):
                values = (f"{doc.doc_id}#{n}", doc.doc_id, n, chunk.text, doc.source, chunk.start, chunk.end)
                for name, value in zip(rows, values):
                    rows[name].append(value)
                rows["metadata"].append(json.dumps({**doc.metadata, **chunk.metadata}, ensure_ascii=False, default=str))
                rows["content_hash"].append(digest)
        dim = store.card.dim
        table = pa.table(
            {
                **rows,
                "n": pa.array(rows["n"], pa.int32()),
                "start": pa.array(rows["start"], pa.int64()),
                "end": pa.array(rows["end"], pa.int64()),
                "embedding_model": pa.array([store.card.model_ref] * len(texts), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
            }
        )
        replaced = [doc.doc_id for doc, _ in docs if doc.doc_id in self.hashes]
        store.write(replaced, table)
        for doc, _ in docs:
            self.hashes[doc.doc_id] = doc.content_hash
        return len(texts)

    def remove(self, doc_ids: list[str]) -> None:
        if self.store is not None and doc_ids:
            self.store.write(doc_ids, None)
            for doc_id in doc_ids:
                self.hashes.pop(doc_id, None)


def _fit(settings: ChunkSettings, embedder: Embedder) -> ChunkSettings:
    """Chunks no longer than the model embeds (MiniLM keeps 254 content tokens, so 256 becomes 254)."""
    if settings.chunker not in CHUNKERS:
        raise ParamError(f"Unknown chunker {settings.chunker!r}; expected one of {', '.join(CHUNKERS)}")
    check_sizes(settings.chunk_tokens, settings.overlap)
    tokens = min(settings.chunk_tokens, embedder.max_tokens)
    return replace(settings, chunk_tokens=tokens, overlap=min(settings.overlap, tokens - 1))


def build_index(
    index: str | os.PathLike[str],
    inputs: str | list[str],
    *,
    model: str | None = None,
    revision: str | None = None,
    chunking: dict[str, Any] | None = None,
    sync: bool = False,
    metadata: dict[str, Any] | None = None,
    ann: bool | None = None,
    write_every: int = WRITE_EVERY,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Add new and changed documents matching `inputs` to the index (created on first use); with `sync`,
    drop documents no longer matched. `ann=None` builds the ANN index from ANN_MIN_CHUNKS chunks on."""
    from tqdm import tqdm

    patterns = [inputs] if isinstance(inputs, str) else list(inputs)
    found = find_documents(patterns)
    if not found:
        raise BadInputError(f"--inputs {' '.join(patterns)} matches no files")
    writer = IndexWriter(index, model=model, revision=revision, chunking=chunking, device=device, dtype=dtype)
    summary: dict[str, Any] = {"index": str(index_path(index)), "documents": len(found), "unchanged": 0}
    summary.update(added=0, replaced=0, removed=0, failed=[], chunks_written=0)
    pending: list[tuple[Document, list[Chunk]]] = []
    for doc_id, path in found:
        try:
            doc = read_document(doc_id, path, metadata)
        except (OSError, BadInputError) as exc:
            summary["failed"].append({"doc_id": doc_id, "error": str(exc)})
            continue
        if writer.is_current(doc):
            summary["unchanged"] += 1
            continue
        summary["replaced" if doc.doc_id in writer.hashes else "added"] += 1
        pending.append((doc, writer.chunks(doc)))
    total = sum(len(chunks) for _, chunks in pending)
    bar = tqdm(total=total, unit="chunk", desc="indexing", disable=not progress or total == 0, file=sys.stderr)
    for group in _groups(pending, write_every):
        bar.update(writer.write(group))
        summary["chunks_written"] = bar.n
    bar.close()
    if sync:
        present = {doc_id for doc_id, _ in found}
        gone = sorted(set(writer.hashes) - present)
        writer.remove(gone)
        summary["removed"] = len(gone)
    store = writer.open_store()
    count = store.count()
    store.finish(ann=count >= ANN_MIN_CHUNKS if ann is None else ann)
    summary.update(chunks=count, embedding_model=store.card.model_ref)
    return summary


def _groups(pending: list[tuple[Document, list[Chunk]]], size: int) -> Iterator[list[tuple[Document, list[Chunk]]]]:
    """Whole documents in groups of about `size` chunks (a document is never split across commits)."""
    group: list[tuple[Document, list[Chunk]]] = []
    count = 0
    for doc, chunks in pending:
        group.append((doc, chunks))
        count += len(chunks)
        if count >= size:
            yield group
            group, count = [], 0
    if group:
        yield group
