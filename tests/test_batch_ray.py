"""The Ray executor on a real local Ray (2 CPUs): the same records as the local executor, the same resume rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_batch import read_records, write_job, write_texts

import taskhub

pytestmark = pytest.mark.ray


def _comparable(records: list[dict]) -> dict:
    return {r["id"]: (r["input"], r["error"]) for r in records}


def test_ray_records_equal_local_records_and_ray_resumes(tmp_path: Path, ray_cluster: Any) -> None:
    write_texts(tmp_path / "docs", 9)
    (tmp_path / "docs" / "t004.txt").write_bytes(b"\xff\xfe not text")
    local_job = write_job(tmp_path, "local", inputs={"files": "docs/*.txt"}, output="local.jsonl", batch_size=3)
    ray_job = write_job(
        tmp_path, "on-ray", inputs={"files": "docs/*.txt"}, output="ray.jsonl", batch_size=3, executor="ray", workers=2
    )
    taskhub.run_job(local_job, quiet=True)
    first = taskhub.run_job(ray_job, limit=4, quiet=True)
    second = taskhub.run_job(ray_job, quiet=True)
    assert (first["executor"], first["done"] + first["failed"], first["remaining"]) == ("ray", 4, 5)
    assert (second["skipped"], second["remaining"]) == (4, 0)
    local, on_ray = read_records(tmp_path / "local.jsonl"), read_records(tmp_path / "ray.jsonl")
    assert len(on_ray) == len(local) == 9
    assert _comparable(on_ray) == _comparable(local)
    assert _comparable(local)["t004.txt"][1]["type"] == "BadInputError"
    outputs = {r["id"]: r["output"] for r in local}
    for record in on_ray:
        if record["error"] is None:
            np.testing.assert_allclose(record["output"], outputs[record["id"]], atol=1e-5)
        assert set(record["metrics"]) == {"seconds", "batch_seconds", "batch_items"}
