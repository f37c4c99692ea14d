"""Search one index: exact cosine over the vectors in memory, LanceDB's IVF index (ANN), BM25, and their fusion."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from taskhub.errors import BadInputError

from .store import IndexStore

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
MIN_NPROBES = 20  # IVF partitions scanned per query at least ...
PROBED_SHARE = 0.1  # ... and at least this share of the sqrt(rows) partitions (100 of 1000 at 1M: recall@10 0.983)
SETTLED_NS = 2_000_000_000  # a version stamp older than this (2 s) is trusted: coarse file times have ticked since
FUSION_DEPTH = 50  # candidates each retriever contributes to hybrid fusion (at least 5 x top_k)
Mode = Literal["auto", "exact", "ann"]
Filter = dict[str, Any]


@dataclass
class Snapshot:
    """One version of an index: a table handle pinned to it, its chunk fields, and (loaded when first
    needed by exact search) its [N, dim] vector matrix."""

    version: int
    table: Any  # lancedb table checked out at `version` (None: nothing written yet)
    rows: Any  # pyarrow table, one row per chunk, without vectors
    store: IndexStore
    has_ann: bool = False  # the table has an IVF index at this version

    @cached_property
    def vectors(self) -> np.ndarray:
        return self.store.vectors(self.table)

    @cached_property
    def metadata(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.rows["metadata"].to_pylist()] if self.rows is not None else []

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {cid: i for i, cid in enumerate(self.rows["chunk_id"].to_pylist())} if self.rows is not None else {}

    def mask(self, where: Filter | None) -> np.ndarray | None:
        """Rows whose metadata matches every key of `where` (a value, or a list meaning any of them)."""
        if not where:
            return None
        return np.fromiter((matches(m, where) for m in self.metadata), dtype=bool, count=len(self.metadata))

    def passage(self, row: int, score: float) -> dict[str, Any]:
        fields = {
            name: self.rows[name][row].as_py() for name in ("text", "doc_id", "chunk_id", "source", "start", "end")
        }
        return {**fields, "score": float(score), "metadata": self.metadata[row]}


def matches(metadata: dict[str, Any], where: Filter) -> bool:
    """Equality per key; a list in the filter means any of its values, a list in the metadata any of its items."""
    for key, wanted in where.items():
        have = metadata.get(key)
        options = wanted if isinstance(wanted, list) else [wanted]
        values = have if isinstance(have, list) else [have]
        if not any(v in options for v in values):
            return False
    return True


def check_filter(where: Any) -> Filter | None:
    """A filter maps metadata keys to a scalar or a list of scalars; anything else is refused."""
    scalar = (str, int, float, bool)

    def plain(value: Any) -> bool:
        return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))

    if where is None:
        return None
    if not isinstance(where, dict) or not all(isinstance(k, str) and plain(v) for k, v in where.items()):
        raise BadInputError(
            f"filter must map metadata keys to a value or a list of values (any of them), got {where!r}"
        )
    return where


class Searcher:
    """Searches one index; reloads its in-memory snapshot when the table's version moves on."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self._snapshot: Snapshot | None = None
        self._stamp: int | None = None  # store.version_stamp() when the snapshot was last found current
        self.nprobes: int | None = None  # IVF partitions probed; None: ann_nprobes() of the index's size
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        """The latest version; one stat per call while the table's version list has not changed."""
        stamp = self.store.version_stamp()
        with self._lock:
            if self._snapshot is not None and stamp is not None and stamp == self._stamp:
                return self._snapshot
            version = self.store.version
            if self._snapshot is None or self._snapshot.version != version:
                table = self.store.table_at(version)
                rows = self.store.rows(table)
                self._snapshot = Snapshot(
                    version, table, rows, self.store, table is not None and self.store.has_ann(table)
                )
            # file times tick coarsely: a stamp this recent could hide a commit made in the same tick
            settled = stamp is not None and time.time_ns() - stamp > SETTLED_NS
            self._stamp = stamp if settled else None
            return self._snapshot

    def dense(
        self,
        queries: np.ndarray,
        top_k: int,
        where: Filter | None = None,
        mode: Mode = "auto",
        snap: Snapshot | None = None,
    ) -> list[list[tuple[int, float]]]:
        """(row, cosine) of the top_k chunks per query vector, best first; rows of `snap` (default: the latest)."""
        snap = snap or self.snapshot()
        if mode == "ann" or (mode == "auto" and snap.has_ann):
            return [self._ann(snap, q, top_k, where) for q in queries]
        return exact_top_k(snap.vectors, queries, top_k, snap.mask(where))

    def _ann(self, snap: Snapshot, query: np.ndarray, top_k: int, where: Filter | None) -> list[tuple[int, float]]:
        """LanceDB IVF search; with a filter, over-fetch and filter, falling back to exact when too few match."""
        if snap.table is None:
            return []
        fetch = top_k * 10 if where else top_k
        hits = (
            snap.table.search(query, vector_column_name="vector")
            .distance_type("cosine")
            .nprobes(self.nprobes or ann_nprobes(snap.rows.num_rows))
            .limit(fetch)
            .select(["chunk_id", "_distance"])
            .to_arrow()
        )
        found = [
            (snap.row_of[cid], 1.0 - float(d))
            for cid, d in zip(hits["chunk_id"].to_pylist(), hits["_distance"].to_pylist())
            if cid in snap.row_of
        ]
        if where:
            found = [(row, s) for row, s in found if matches(snap.metadata[row], where)]
            if len(found) < top_k:
                return exact_top_k(snap.vectors, query[None], top_k, snap.mask(where))[0]
        return found[:top_k]

    def bm25(
        self, query: str, top_k: int, where: Filter | None = None, snap: Snapshot | None = None
    ) -> list[tuple[int, float]]:
        """(row, BM25 score) from LanceDB's full-text index, best first (over-fetched, then filtered)."""
        snap = snap or self.snapshot()
        if snap.table is None or not query.strip():
            return []
        fetch = top_k * 10 if where else top_k
        hits = (
            snap.table.search(query, query_type="fts", fts_columns="text")
            .limit(fetch)
            .select(["chunk_id", "_score"])
            .to_arrow()
        )
        found = [
            (snap.row_of[cid], float(s))
            for cid, s in zip(hits["chunk_id"].to_pylist(), hits["_score"].to_pylist())
            if cid in snap.row_of
        ]
        if where:
            found = [(row, s) for row, s in found if matches(snap.metadata[row], where)]
        return found[:top_k]


def ann_nprobes(rows: int) -> int:
    """Partitions to probe in an IVF index of LanceDB's default sqrt(rows) partitions: a fixed share of them,
    since recall at a fixed count falls as the index grows (20 of 316 at 100k: 0.998; 20 of 1000 at 1M: 0.73)."""
    return max(MIN_NPROBES, math.ceil(PROBED_SHARE * math.sqrt(rows)))


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, top_k: int, mask: np.ndarray | None = None
) -> list[list[tuple[int, float]]]:
    """Brute-force cosine (vectors and queries are unit length): one [B, N] product, then a partial sort."""
    if vectors.shape[0] == 0:
        return [[] for _ in queries]
    scores = queries.astype(np.float32) @ vectors.T  # [B, N]
    if mask is not None:
        scores[:, ~mask] = -np.inf
    k = min(top_k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    results = []
    for b in range(scores.shape[0]):
        order = top[b][np.lexsort((top[b], -scores[b, top[b]]))]  # score descending, row ascending on ties
        results.append([(int(i), float(scores[b, i])) for i in order if np.isfinite(scores[b, i])])
    return results


def reciprocal_rank_fusion(rankings: list[list[tuple[int, float]]], top_k: int) -> list[tuple[int, float]]:
    """RRF: each row scores sum(1 / (RRF_K + rank)) over the rankings it appears in (rank from 1)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (row, _) in enumerate(ranking, 1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:top_k]


_searchers: dict[str, Searcher] = {}
_searchers_lock = threading.Lock()


def get_searcher(index: str) -> Searcher:
    """One Searcher (and snapshot) per index folder per process."""
    store = IndexStore.open(index)
    key = str(store.path.resolve())
    with _searchers_lock:
        cached = _searchers.get(key)
        if cached is None or cached.store.card != store.card:
            cached = _searchers[key] = Searcher(store)
        return cached
