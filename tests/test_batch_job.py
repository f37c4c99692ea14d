"""Batch jobs end to end: records, ids per source, limit, dry run, --no-resume, parquet, plugin readers, progress."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_batch import read_records, reference_embeddings, write_job, write_jsonl, write_texts

import taskhub
from taskhub import JobManifest, hookimpl
from taskhub.batch import Item
from taskhub.batch.progress import Progress
from taskhub.errors import ManifestError, ModelNotAvailableError

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "text"
JOBS = Path(__file__).resolve().parents[1] / "manifests" / "jobs"


@pytest.mark.slow
def test_file_job_records_match_sentence_transformers(tmp_path: Path) -> None:
    texts = write_texts(tmp_path / "docs" / "a", 5) | write_texts(tmp_path / "docs" / "b", 2, start=5)
    job = write_job(tmp_path, inputs={"files": "docs/**/*.txt"})
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["total"], summary["done"], summary["failed"], summary["remaining"]) == (7, 7, 0, 0)
    records = read_records(tmp_path / "out.jsonl")
    by_id = {r["id"]: r for r in records}
    expected_ids = {f"a/{n}" for n in list(texts)[:5]} | {f"b/{n}" for n in list(texts)[5:]}
    assert set(by_id) == expected_ids and len(records) == 7
    ids = sorted(by_id)
    want = reference_embeddings([texts[i.split("/")[1]] for i in ids])
    got = np.array([by_id[i]["output"] for i in ids])
    np.testing.assert_allclose(got, want, atol=2e-5)
    for rid in ids:
        record = by_id[rid]
        assert list(record) == ["id", "input", "output", "error", "metrics"]
        assert record["input"] == str(tmp_path / "docs" / rid) and record["error"] is None
        assert record["metrics"]["batch_items"] <= 4 and record["metrics"]["seconds"] > 0


def test_jsonl_ids_from_id_field_or_line_number_and_csv_rows(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"key": "x", "text": "first"}, {"key": 7, "text": "second"}])
    with open(tmp_path / "data.jsonl", "a") as f:
        f.write("\n" + json.dumps({"key": "z", "text": "third"}) + "\n")  # a blank line keeps numbering
    (tmp_path / "rows.csv").write_text('name,text\nr1,"one, with comma"\nr2,two\n', encoding="utf-8")
    by_field = write_job(
        tmp_path, "a", inputs={"jsonl": "data.jsonl", "field": "text", "id_field": "key"}, output="a.jsonl"
    )
    by_line = write_job(tmp_path, "b", inputs={"jsonl": "data.jsonl", "field": "text"}, output="b.jsonl")
    csv_job = write_job(tmp_path, "c", inputs={"csv": "rows.csv", "field": "text"}, output="c.jsonl")
    for job in (by_field, by_line, csv_job):
        taskhub.run_job(job, quiet=True)
    assert [(r["id"], r["input"]) for r in read_records(tmp_path / "a.jsonl")] == [("x", "x"), (7, "7"), ("z", "z")]
    assert [r["id"] for r in read_records(tmp_path / "b.jsonl")] == [1, 2, 4]
    csv_records = read_records(tmp_path / "c.jsonl")
    assert [r["id"] for r in csv_records] == [1, 2]
    want = reference_embeddings(["one, with comma", "two"])
    np.testing.assert_allclose([r["output"] for r in csv_records], want, atol=2e-5)


def test_limit_runs_at_most_n_and_the_rest_follows_on_rerun(tmp_path: Path) -> None:
    write_texts(tmp_path / "docs", 6)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"})
    first = taskhub.run_job(job, limit=2, quiet=True)
    assert (first["done"], first["skipped"], first["remaining"]) == (2, 0, 4)
    assert len(read_records(tmp_path / "out.jsonl")) == 2
    second = taskhub.run_job(job, quiet=True)
    assert (second["done"], second["skipped"], second["remaining"]) == (4, 2, 0)
    ids = [r["id"] for r in read_records(tmp_path / "out.jsonl")]
    assert sorted(ids) == sorted(f"t{n:03d}.txt" for n in range(6))


def test_dry_run_checks_and_counts_but_loads_no_model(tmp_path: Path) -> None:
    write_texts(tmp_path / "docs", 3)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, model=str(tmp_path / "no-such-model"))
    summary = taskhub.run_job(job, dry_run=True, quiet=True)
    assert (summary["dry_run"], summary["total"], summary["to_run"]) == (True, 3, 3)
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(ModelNotAvailableError):  # a real run does need the model
        taskhub.run_job(job, quiet=True)
    assert taskhub.run_job(job, dry_run=True, limit=1, quiet=True)["to_run"] == 1


def test_dry_run_rejects_params_the_task_does_not_take(tmp_path: Path) -> None:
    write_texts(tmp_path / "docs", 1)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, params={"pooling": "mean", "temperature": 0.7})
    with pytest.raises(ManifestError) as err:
        taskhub.run_job(job, dry_run=True, quiet=True)
    assert f"{job}:" in str(err.value) and "params" in str(err.value) and "'temperature'" in str(err.value)
    assert "normalize" in str(err.value)  # the valid ones are listed
    bad_value = write_job(tmp_path, "v", inputs={"files": "docs/*.txt"}, params={"pooling": "max"})
    with pytest.raises(ManifestError, match="pooling"):
        taskhub.run_job(bad_value, dry_run=True, quiet=True)


def test_bad_manifest_names_file_line_and_field(tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text(
        "job: bad\ntask: feature-extraction\ninputs:\n  files: '*.txt'\n  csv: x.csv\noutput: o.jsonl\nbatch_size: 0\n"
    )
    with pytest.raises(ManifestError) as err:
        taskhub.run_job(job, quiet=True)
    message = str(err.value)
    assert f"{job}:7: batch_size:" in message
    assert f"{job}:4: inputs:" in message and "exactly one of" in message
    missing_field = write_job(tmp_path, "m", inputs={"jsonl": "d.jsonl"})
    with pytest.raises(ManifestError, match=r"m\.yaml:\d+: inputs\.field: required"):
        taskhub.run_job(missing_field, quiet=True)
    unknown_task = write_job(tmp_path, "u", task="feature-extractoin", inputs={"files": "*.txt"})
    with pytest.raises(ManifestError, match=r"u\.yaml:2: task: .*feature-extraction"):
        taskhub.run_job(unknown_task, quiet=True)
    no_match = write_job(tmp_path, "n", inputs={"files": "nothing/*.txt"})
    with pytest.raises(ManifestError, match="matches no files"):
        taskhub.run_job(no_match, quiet=True)


def test_no_resume_moves_old_output_aside(tmp_path: Path) -> None:
    write_texts(tmp_path / "docs", 2)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"})
    taskhub.run_job(job, quiet=True)
    old = (tmp_path / "out.jsonl").read_text()
    summary = taskhub.run_job(job, resume=False, quiet=True)
    assert summary["done"] == 2 and summary["skipped"] == 0
    backup = Path(summary["moved_aside"])
    assert backup.parent == tmp_path and backup.name.startswith("out.jsonl.") and backup.name.endswith(".bak")
    assert backup.read_text() == old and len(read_records(tmp_path / "out.jsonl")) == 2


def test_job_manifest_object_resolves_paths_against_working_folder(tmp_path: Path, monkeypatch: Any) -> None:
    write_texts(tmp_path / "docs", 2)
    monkeypatch.chdir(tmp_path)
    manifest = JobManifest(job="obj", task="embeddings", inputs={"files": "docs/*.txt"}, output="o/x.jsonl")
    assert taskhub.run_job(manifest, quiet=True)["done"] == 2
    assert len(read_records(tmp_path / "o" / "x.jsonl")) == 2


def test_parquet_output_is_resumable_part_files(tmp_path: Path, monkeypatch: Any) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from taskhub.batch import ParquetWriter

    monkeypatch.setattr(ParquetWriter, "rows_per_part", 2)
    texts = write_texts(tmp_path / "docs", 5)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, output="out.parquet", batch_size=2)
    assert taskhub.run_job(job, limit=3, quiet=True)["done"] == 3
    (tmp_path / "out.parquet" / ".part-00009.tmp").write_bytes(b"torn")  # what a crash mid-part leaves
    assert taskhub.run_job(job, quiet=True)["skipped"] == 3
    assert not list((tmp_path / "out.parquet").glob("*.tmp"))
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sorted(r["id"] for r in table) == sorted(texts)
    names = sorted(texts)
    got = {r["id"]: json.loads(r["output"]) for r in table}
    np.testing.assert_allclose([got[n] for n in names], reference_embeddings([texts[n] for n in names]), atol=2e-5)
    assert all(r["error"] is None for r in table)


class LinesReader:
    """A third-party reader: one item per line of a text file, id = the line's first word."""

    @hookimpl
    def register_batch_readers(self, register: Any) -> None:
        def read_lines(location: Path, inputs: Any) -> Any:
            for line in location.read_text().splitlines():
                yield Item(line.split()[0], line.split()[0], line)

        register("lines", read_lines)


def test_plugin_reader_is_used_like_the_builtin_ones(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("alpha is first\nbeta comes next\n")
    job = write_job(tmp_path, inputs={"reader": "lines", "path": "in.txt"})
    taskhub.register_plugin(LinesReader(), "lines-reader")
    try:
        taskhub.run_job(job, quiet=True)
    finally:
        taskhub.unregister_plugin("lines-reader")
    records = read_records(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == ["alpha", "beta"]
    np.testing.assert_allclose(
        [r["output"] for r in records], reference_embeddings(["alpha is first", "beta comes next"]), atol=2e-5
    )
    with pytest.raises(
        ManifestError, match="inputs: Unknown batch reader 'lines'.*Available: files, csv, documents, jsonl"
    ):
        taskhub.run_job(job, quiet=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    plain, tty = io.StringIO(), _Terminal()
    for stream in (plain, tty):
        progress = Progress(10, label="job", stream=stream, interval=0.0, refresh=0.0)
        progress.update(3, 1)
        progress.update(6, 0)
        progress.close()
    lines = plain.getvalue().splitlines()
    assert (
        lines[0].startswith("job: 4/10 (40%)")
        and "items/s" in lines[0]
        and "ETA" in lines[0]
        and lines[0].endswith("errors 1")
    )
    assert lines[1].startswith("job: 10/10 (100%)") and "ETA 00:00" in lines[1]
    frames = tty.getvalue().split("\r")[1:]
    assert frames[0].startswith("job  40% [#########") and "4/10" in frames[0] and "errors 1" in frames[0]
    assert "10/10" in frames[-1] and tty.getvalue().endswith("\n")


@pytest.mark.parametrize("job", sorted(JOBS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_jobs_are_valid_and_find_their_inputs(job: Path) -> None:
    summary = taskhub.run_job(job, dry_run=True, resume=False, quiet=True)
    assert summary["total"] >= 1


def test_example_embedding_job_covers_the_sample_texts() -> None:
    summary = taskhub.run_job(JOBS / "embed-samples.yaml", dry_run=True, resume=False, quiet=True)
    assert summary["total"] == len(list(SAMPLES.glob("*.txt"))) >= 3
