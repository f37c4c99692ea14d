"""The index-documents job on the Ray executor (a real local Ray, 2 CPUs): the same index as the local executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_batch import read_records, write_job
from fixtures_rag import SAMPLE_DOCS
from taskhub_rag.api import IndexStore

import taskhub

pytestmark = pytest.mark.ray

DOCS = ["tides.md", "git.md", "coffee.md", "rainbows.md", "photosynthesis.md"]


def index_rows(index: Path) -> dict[str, tuple]:
    """chunk_id -> every stored field, and the vector, of each chunk (an id twice would shrink the dict)."""
    rows, vectors = IndexStore.open(index).columns()
    records = rows.to_pylist()
    assert len({r["chunk_id"] for r in records}) == len(records)
    return {r["chunk_id"]: (tuple(sorted(r.items())), vector) for r, vector in zip(records, vectors)}


def test_index_documents_on_ray_builds_the_same_index_as_the_local_executor(tmp_path: Path, ray_cluster: Any) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in DOCS:
        (docs / name).write_bytes((SAMPLE_DOCS / name).read_bytes())
    common = {
        "task": "index-documents",
        "inputs": {"reader": "documents", "path": "docs/*.md"},
        "batch_size": 2,  # three batches: two actors append to one table at once
    }
    local_job = write_job(
        tmp_path, "local", params={"index": str(tmp_path / "local-index"), "chunk_tokens": 48, "overlap": 8},
        output="local.jsonl", **common,
    )  # fmt: skip
    ray_job = write_job(
        tmp_path, "on-ray", params={"index": str(tmp_path / "ray-index"), "chunk_tokens": 48, "overlap": 8},
        output="ray.jsonl", executor="ray", workers=2, **common,
    )  # fmt: skip
    assert taskhub.run_job(local_job, quiet=True)["done"] == len(DOCS)
    first = taskhub.run_job(ray_job, quiet=True)
    second = taskhub.run_job(ray_job, quiet=True)
    assert (first["executor"], first["done"], first["failed"]) == ("ray", len(DOCS), 0)
    assert (second["skipped"], second["remaining"]) == (len(DOCS), 0)

    local, on_ray = index_rows(tmp_path / "local-index"), index_rows(tmp_path / "ray-index")
    assert sorted(on_ray) == sorted(local) and len(local) > len(DOCS)
    for chunk_id, (fields, vector) in local.items():
        assert on_ray[chunk_id][0] == fields
        np.testing.assert_allclose(on_ray[chunk_id][1], vector, atol=1e-5)
    outputs = lambda path: {r["id"]: r["output"] for r in read_records(path)}  # noqa: E731
    assert outputs(tmp_path / "ray.jsonl") == outputs(tmp_path / "local.jsonl")
    assert {o["status"] for o in outputs(tmp_path / "ray.jsonl").values()} == {"added"}
