"""Rule: nothing already written is ever lost or duplicated (foreign files, two writers, output
among the inputs, unwritable outputs, ids that cannot be encoded)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures_batch import read_records, reference_embeddings, sentence, write_job, write_jsonl, write_texts

import taskhub
from taskhub.errors import TaskhubError

MISSING_MODEL = "/nonexistent/model-dir"  # loading it would fail: the refusals below must come first


def _refused(job: Path, *needles: str) -> str:
    with pytest.raises(TaskhubError) as err:
        taskhub.run_job(job, quiet=True)
    message = str(err.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(
    "content",
    [
        b"my notes",  # no newline: not a torn record either
        b"my notes\nmore notes\n",
        b'{"id": 1, "text": "someone else\'s JSON Lines"}\n',
        b'{"id": 1, "input": "1", "output": [1], "error": null, "metrics": {"seconds": 0}}\nnotes\n',
        b"\n",
    ],
)
def test_an_output_that_is_not_a_record_file_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    write_texts(tmp_path / "docs", 2)
    out = tmp_path / "notes.jsonl"
    out.write_bytes(content)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, output="notes.jsonl", model=MISSING_MODEL)
    _refused(job, str(out), "not a taskhub record file")
    with pytest.raises(TaskhubError):
        taskhub.run_job(job, dry_run=True, quiet=True)
    assert out.read_bytes() == content
    assert not (tmp_path / "notes.jsonl.lock").exists()


def test_no_resume_keeps_a_foreign_file_as_a_bak(tmp_path: Path) -> None:
    texts = write_texts(tmp_path / "docs", 2)
    (tmp_path / "notes.jsonl").write_bytes(b"my notes")
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, output="notes.jsonl")
    summary = taskhub.run_job(job, resume=False, quiet=True)
    assert Path(summary["moved_aside"]).read_bytes() == b"my notes"
    assert sorted(r["id"] for r in read_records(tmp_path / "notes.jsonl")) == sorted(texts)


def _start_cli_job(job: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    taskhub_cli = shutil.which("taskhub", path=str(Path(sys.executable).parent)) or "taskhub"
    return subprocess.Popen(
        [taskhub_cli, "batch", str(job)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_for_lines(proc: subprocess.Popen[str], path: Path, count: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while (path.read_bytes().count(b"\n") if path.exists() else 0) < count:
        assert proc.poll() is None, f"job ended early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "job made no progress"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_second_writer_is_refused_then_sigkill_and_rerun_give_every_id_once(tmp_path: Path) -> None:
    texts = [sentence(i) for i in range(2000)]  # long enough to outlive a second process's start
    write_jsonl(tmp_path / "in.jsonl", [{"key": f"k{i}", "text": t} for i, t in enumerate(texts)])
    job = write_job(tmp_path, inputs={"jsonl": "in.jsonl", "field": "text", "id_field": "key"}, batch_size=1)
    out, lock = tmp_path / "out.jsonl", tmp_path / "out.jsonl.lock"
    first = _start_cli_job(job)
    _wait_for_lines(first, out, 4)
    assert lock.read_text().strip() == str(first.pid)
    # a second real process is refused with the holder's PID, one line, exit 1
    second = _start_cli_job(job)
    _, stderr = second.communicate(timeout=120)
    assert first.poll() is None, "the first run ended before the second one started"
    assert second.returncode == 1
    assert stderr.strip().splitlines() == [f"error: {_held_message(out, lock, first.pid)}"]
    # and in-process too, while the first still runs
    _refused(job, f"already being written by PID {first.pid}")
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    first.communicate()
    assert lock.exists()  # a killed run leaves its lock file, but the OS dropped the lock
    rerun = write_job(  # the same job in bigger batches, to finish sooner
        tmp_path, "rerun", inputs={"jsonl": "in.jsonl", "field": "text", "id_field": "key"}, batch_size=64
    )
    summary = taskhub.run_job(rerun, quiet=True)
    assert summary["remaining"] == 0 and summary["failed"] == 0 and summary["skipped"] >= 4
    assert not lock.exists()  # a clean end removes it
    records = read_records(out)
    counts = Counter(r["id"] for r in records)
    assert set(counts) == {f"k{i}" for i in range(len(texts))} and set(counts.values()) == {1}
    by_id = {r["id"]: r["output"] for r in records}
    sample = range(0, len(texts), 20)  # both runs' records, checked against sentence-transformers
    got = [by_id[f"k{i}"] for i in sample]
    np.testing.assert_allclose(got, reference_embeddings([texts[i] for i in sample]), atol=2e-5)


def _held_message(out: Path, lock: Path, pid: int) -> str:
    return (
        f"{out} is already being written by PID {pid} (lock file {lock}); "
        "wait for that run to end, or choose another output"
    )


def test_a_lock_held_by_another_process_refuses_the_run_and_the_dry_run(tmp_path: Path) -> None:
    write_texts(tmp_path / "docs", 2)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, model=MISSING_MODEL)
    lock = tmp_path / "out.jsonl.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        message = _refused(job, f"already being written by PID {holder.pid}")
        assert message.endswith(_held_message(tmp_path / "out.jsonl", lock, holder.pid))
        with pytest.raises(TaskhubError, match=f"PID {holder.pid}"):
            taskhub.run_job(job, dry_run=True, quiet=True)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out.jsonl").exists()


def test_the_output_may_not_be_the_input(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [{"id": i, "text": sentence(i)} for i in range(3)])
    before = data.read_bytes()
    job = write_job(tmp_path, inputs={"jsonl": "data.jsonl", "field": "text", "id_field": "id"}, output="data.jsonl")
    _refused(job, "is the job's input")
    (tmp_path / "link.jsonl").symlink_to(data)
    job = write_job(tmp_path, inputs={"jsonl": "link.jsonl", "field": "text", "id_field": "id"}, output="data.jsonl")
    _refused(job, "is the job's input")
    assert data.read_bytes() == before


def test_a_files_glob_never_reads_the_jobs_own_output_lock_or_baks(tmp_path: Path) -> None:
    texts = write_texts(tmp_path / "docs", 3)
    job = write_job(tmp_path, inputs={"files": "docs/*"}, output="docs/out.jsonl", batch_size=8)
    assert taskhub.run_job(job, quiet=True)["total"] == 3
    assert not (tmp_path / "docs" / "out.jsonl.lock").exists()  # a clean end removes the lock file
    again = taskhub.run_job(job, resume=False, quiet=True)  # leaves docs/out.jsonl.<stamp>.bak
    assert (again["total"], again["done"]) == (3, 3)
    assert [p.name for p in (tmp_path / "docs").glob("out.jsonl.*.bak")]
    (tmp_path / "docs" / "out.jsonl.lock").write_text("12345\n")  # a killed run's lock file
    third = taskhub.run_job(job, quiet=True)
    assert (third["total"], third["skipped"], third["done"]) == (3, 3, 0)
    assert sorted(r["id"] for r in read_records(tmp_path / "docs" / "out.jsonl")) == sorted(texts)


def test_parquet_output_inside_the_glob_is_skipped(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    write_texts(tmp_path / "docs", 2)
    job = write_job(tmp_path, inputs={"files": "docs/**/*"}, output="docs/out.parquet")
    assert taskhub.run_job(job, quiet=True)["done"] == 2
    assert taskhub.run_job(job, quiet=True)["total"] == 2  # the part files are not inputs


def test_unwritable_outputs_are_refused_before_the_model_loads(tmp_path: Path) -> None:
    write_texts(tmp_path / "docs", 1)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder.jsonl").mkdir()
    cases = {
        "afile/out.jsonl": "is not a folder",
        "afile/deeper/out.jsonl": "is not a folder",
        "folder.jsonl": "not a regular file",
    }
    for output, needle in cases.items():
        job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, output=output, model=MISSING_MODEL)
        _refused(job, needle)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        if not os.access(tmp_path / "ro", os.W_OK):  # root can write anywhere
            job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, output="ro/out.jsonl", model=MISSING_MODEL)
            _refused(job, "is not writable")
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert (tmp_path / "afile").read_text() == "x"


def test_parquet_target_that_is_a_file_or_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    write_texts(tmp_path / "docs", 1)
    (tmp_path / "out.parquet").write_bytes(b"PAR1 not really")
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, output="out.parquet", model=MISSING_MODEL)
    _refused(job, "out.parquet is a file")
    (tmp_path / "photos.parquet").mkdir()
    (tmp_path / "photos.parquet" / "holiday.jpg").write_bytes(b"\xff\xd8")
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, output="photos.parquet", model=MISSING_MODEL)
    _refused(job, "holiday.jpg")
    assert (tmp_path / "out.parquet").read_bytes() == b"PAR1 not really"


def test_an_id_with_a_lone_surrogate_fails_alone_and_resume_does_not_redo_it(tmp_path: Path) -> None:
    # json.dumps escapes the surrogate as \ud800, which json.loads turns back into a lone surrogate
    rows = [{"id": "a", "text": "first"}, {"id": "bad\ud800", "text": "second"}, {"id": "c", "text": "third"}]
    write_jsonl(tmp_path / "in.jsonl", rows)
    job = write_job(tmp_path, inputs={"jsonl": "in.jsonl", "field": "text", "id_field": "id"}, batch_size=8)
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["done"], summary["failed"], summary["stopped"]) == (2, 1, None)
    raw = (tmp_path / "out.jsonl").read_bytes()
    raw.decode("utf-8")  # the file stays valid UTF-8
    records = read_records(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == ["a", "bad\\ud800", "c"]  # the id's escaped spelling
    assert records[1]["error"]["type"] == "BadInputError" and "unpaired surrogate" in records[1]["error"]["message"]
    assert records[1]["output"] is None
    np.testing.assert_allclose(
        [records[0]["output"], records[2]["output"]], reference_embeddings(["first", "third"]), atol=2e-5
    )
    rerun = taskhub.run_job(job, quiet=True)
    assert (rerun["skipped"], rerun["done"], rerun["failed"]) == (3, 0, 0)
    assert (tmp_path / "out.jsonl").read_bytes() == raw


def test_a_lone_surrogate_id_in_a_parquet_job_is_written_once(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    write_jsonl(tmp_path / "in.jsonl", [{"id": "ok", "text": "fine"}, {"id": "\udcff", "text": "x"}])
    job = write_job(
        tmp_path, inputs={"jsonl": "in.jsonl", "field": "text", "id_field": "id"}, output="out.parquet", batch_size=8
    )
    assert (taskhub.run_job(job, quiet=True)["failed"]) == 1
    assert taskhub.run_job(job, quiet=True)["skipped"] == 2
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sorted(r["id"] for r in table) == ["\\udcff", "ok"]
