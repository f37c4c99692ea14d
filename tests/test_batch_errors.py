"""Batch jobs and bad inputs: per-item errors, on_error=stop, duplicate ids and unreadable sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_plugins import ODD_RESULTS, ODD_TASK, OddResults, installed, write_manifest
from fixtures_batch import read_records, reference_embeddings, write_job, write_jsonl, write_texts

import taskhub
from taskhub.errors import BadInputError


def test_a_non_utf8_file_fails_alone_and_the_others_are_right(tmp_path: Path) -> None:
    texts = write_texts(tmp_path / "docs", 5)
    (tmp_path / "docs" / "t002.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    summary = taskhub.run_job(write_job(tmp_path, inputs={"files": "docs/*.txt"}), quiet=True)
    assert (summary["done"], summary["failed"], summary["stopped"]) == (4, 1, None)
    assert summary["error"]["id"] == "t002.txt"
    by_id = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    bad = by_id.pop("t002.txt")
    assert bad["output"] is None and bad["error"]["type"] == "BadInputError"
    assert "not UTF-8" in bad["error"]["message"] and "t002.txt" in bad["error"]["message"]
    names = sorted(by_id)
    assert all(by_id[n]["error"] is None for n in names)
    np.testing.assert_allclose(
        [by_id[n]["output"] for n in names], reference_embeddings([texts[n] for n in names]), atol=2e-5
    )


def _mixed(tmp_path: Path) -> Path:
    """Six records; "c" holds a number where the task needs text, so the batch holding it raises."""
    values = {"a": "first text", "b": "second text", "c": 12345, "d": "fourth text", "e": "fifth", "f": "sixth"}
    return write_jsonl(tmp_path / "mixed.jsonl", [{"id": k, "text": v} for k, v in values.items()])


def test_a_batch_that_raises_is_rerun_item_by_item(tmp_path: Path) -> None:
    _mixed(tmp_path)
    job = write_job(tmp_path, inputs={"jsonl": "mixed.jsonl", "field": "text", "id_field": "id"}, batch_size=2)
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["done"], summary["failed"]) == (5, 1)
    records = read_records(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == list("abcdef")
    bad = records[2]
    assert bad["error"]["type"] == "BadInputError" and "expected a string" in bad["error"]["message"]
    good = [r for r in records if r["id"] != "c"]
    want = reference_embeddings(["first text", "second text", "fourth text", "fifth", "sixth"])
    np.testing.assert_allclose([r["output"] for r in good], want, atol=2e-5)
    assert records[3]["metrics"]["batch_items"] == 2  # "d" shared its batch with "c" and still succeeded


def test_on_error_stop_writes_what_succeeded_and_not_the_failure(tmp_path: Path) -> None:
    _mixed(tmp_path)
    job = write_job(
        tmp_path, inputs={"jsonl": "mixed.jsonl", "field": "text", "id_field": "id"}, batch_size=2, on_error="stop"
    )
    summary = taskhub.run_job(job, quiet=True)
    assert summary["stopped"] == "error" and summary["error"]["id"] == "c"
    assert (summary["done"], summary["failed"], summary["remaining"]) == (3, 1, 3)
    assert [r["id"] for r in read_records(tmp_path / "out.jsonl")] == ["a", "b", "d"]


def test_a_missing_input_field_fails_that_item_only(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": "has text"}, {"body": "no text field"}])
    taskhub.run_job(write_job(tmp_path, inputs={"jsonl": "d.jsonl", "field": "text"}), quiet=True)
    ok, missing = read_records(tmp_path / "out.jsonl")
    np.testing.assert_allclose(ok["output"], reference_embeddings(["has text"])[0], atol=2e-5)
    assert missing["id"] == 2 and missing["error"]["type"] == "BadInputError"
    assert "d.jsonl:2: no field 'text' (fields: body)" in missing["error"]["message"]


def test_duplicate_ids_stop_the_job_before_any_work(tmp_path: Path) -> None:
    records = [{"id": i, "text": f"text {n}"} for n, i in enumerate(["a", "b", "a", "c", 5, "5", "d"])]
    write_jsonl(tmp_path / "dups.jsonl", records)
    job = write_job(tmp_path, inputs={"jsonl": "dups.jsonl", "field": "text", "id_field": "id"})
    with pytest.raises(BadInputError) as err:
        taskhub.run_job(job, quiet=True)
    message = str(err.value)
    assert "2 duplicate ids" in message and "'a' at items 1, 3" in message and "'5' at items 5, 6" in message
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(BadInputError):
        taskhub.run_job(job, dry_run=True, quiet=True)


def test_an_unparseable_line_stops_the_job_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": "broken\n')
    with pytest.raises(BadInputError, match=r"d\.jsonl:2: not valid JSON"):
        taskhub.run_job(write_job(tmp_path, inputs={"jsonl": "d.jsonl", "field": "text"}), quiet=True)
    assert not (tmp_path / "out.jsonl").exists()


def test_an_item_error_names_the_input_by_its_position_in_the_job(tmp_path: Path) -> None:
    """With batch_size=2 the bad items (positions 3 and 4) are each the second or first of a later
    batch; the checked input kind (a number) and a stage's own error (no sentences) both name them
    by their position among the job's inputs, not by their index in the batch or the rerun."""
    pairs = [{"source_sentence": f"query {n}", "sentences": [f"answer {n}", "other"]} for n in range(6)]
    pairs[3] = {"source_sentence": "query 3", "sentences": []}
    records = [{"id": f"r{n}", "pair": pair} for n, pair in enumerate(pairs)]
    records[4]["pair"] = 12345
    write_jsonl(tmp_path / "pairs.jsonl", records)
    job = write_job(
        tmp_path,
        task="sentence-similarity",
        inputs={"jsonl": "pairs.jsonl", "field": "pair", "id_field": "id"},
        batch_size=2,
    )
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["done"], summary["failed"]) == (4, 2)
    by_id = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    assert by_id["r3"]["error"]["message"].startswith("Input 3: sentences must be a non-empty list of strings")
    assert by_id["r4"]["error"]["message"].startswith("Input 4 is a int")
    assert all(by_id[f"r{n}"]["error"] is None for n in (0, 1, 2, 5))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_result_json_cannot_hold_fails_its_item_and_no_nan_reaches_a_record(tmp_path: Path, suffix: str) -> None:
    write_manifest(tmp_path / "m", "odd", ODD_TASK)
    values = ["first", *ODD_RESULTS, "last"]
    write_jsonl(tmp_path / "in.jsonl", [{"id": v, "text": v} for v in values])
    job = write_job(
        tmp_path,
        task="odd-results",
        model=None,
        output=f"out{suffix}",
        inputs={"jsonl": "in.jsonl", "field": "text", "id_field": "id"},
    )
    with installed(OddResults(tmp_path / "m"), "odd"):
        summary = taskhub.run_job(job, quiet=True)
    assert (summary["done"], summary["failed"]) == (2, len(ODD_RESULTS))
    if suffix == ".jsonl":  # strict JSON: Python's parser would accept NaN, this one does not
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        records = [json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in a record")) for line in lines]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
        records = [{**r, "output": None if r["output"] is None else json.loads(r["output"]),
                    "error": None if r["error"] is None else json.loads(r["error"])} for r in rows]  # fmt: skip
    by_id = {r["id"]: r for r in records}
    assert sorted(by_id) == sorted(values)
    assert by_id["first"]["output"] == "FIRST" and by_id["last"]["output"] == "LAST"
    for position, name in enumerate(ODD_RESULTS, 1):
        error = by_id[name]["error"]
        assert by_id[name]["output"] is None and error["type"] == "StageError"
        assert error["message"].startswith(f"Input {position}: the result cannot be written as JSON")
