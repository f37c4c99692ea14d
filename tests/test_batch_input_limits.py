"""Rules: no hang, no unbounded memory on hostile inputs (FIFOs, folders, symlink loops and escapes,
huge lines and files, long audio), and the CLI's INPUT is text unless it names a regular file."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_batch import read_records, reference_embeddings, sentence, write_job, write_jsonl, write_texts

import taskhub
from taskhub.batch.readers import read_files, read_jsonl
from taskhub.cli_inputs import cli_input
from taskhub.errors import BadInputError, TaskhubError
from taskhub.manifest import JobInputs


def _unblock_later(fifo: Path) -> None:
    """Should a reader block on the FIFO, open its write end so the read ends (empty) and the test
    fails instead of hanging; with no reader waiting, the non-blocking open fails and nothing happens."""

    def poke() -> None:
        for _ in range(600):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:
                time.sleep(0.5)

    threading.Thread(target=poke, daemon=True).start()


@pytest.mark.parametrize("source", ["jsonl", "csv"])
def test_a_fifo_or_folder_as_job_input_is_an_error_not_a_hang(tmp_path: Path, source: str) -> None:
    os.mkfifo(tmp_path / f"pipe.{source}")
    _unblock_later(tmp_path / f"pipe.{source}")
    job = write_job(tmp_path, inputs={source: f"pipe.{source}", "field": "text"})
    with pytest.raises(TaskhubError, match="not a regular file"):
        taskhub.run_job(job, quiet=True)
    (tmp_path / f"dir.{source}").mkdir()
    job = write_job(tmp_path, inputs={source: f"dir.{source}", "field": "text"})
    with pytest.raises(TaskhubError, match="is a folder"):
        taskhub.run_job(job, quiet=True)


def _inputs(pattern: str, **extra: object) -> JobInputs:
    return JobInputs.model_validate({"files": pattern, **extra})


def _ids(pattern: Path, **extra: object) -> dict[str, str | None]:
    return {str(item.id): item.problem for item in read_files(pattern, _inputs(str(pattern), **extra))}


def test_globs_do_not_follow_symlinked_folders_loops_or_links_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_texts(root / "sub", 1)
    write_texts(root, 1)
    write_texts(tmp_path / "outside", 1, start=5)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the root
    (root / "elsewhere").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "secret.txt").symlink_to(tmp_path / "outside" / "t005.txt")
    (root / "alias.txt").symlink_to(root / "t000.txt")  # stays inside: fine
    os.mkfifo(root / "pipe.txt")
    got = _ids(root / "**" / "*.txt")
    assert set(got) == {"alias.txt", "pipe.txt", "secret.txt", "t000.txt", "sub/t000.txt"}
    assert got["t000.txt"] is None and got["sub/t000.txt"] is None and got["alias.txt"] is None
    assert "outside" in (got["secret.txt"] or "") and "follow_symlinks: true" in (got["secret.txt"] or "")
    assert "not a regular file" in (got["pipe.txt"] or "")


def test_follow_symlinks_enters_linked_folders_once_and_stops_at_loops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_texts(root / "sub", 1)
    write_texts(tmp_path / "outside", 1, start=5)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "elsewhere").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "secret.txt").symlink_to(tmp_path / "outside" / "t005.txt")
    got = _ids(root / "**" / "*.txt", follow_symlinks=True)
    assert got == {"sub/t000.txt": None, "elsewhere/t005.txt": None, "secret.txt": None}


def test_a_job_over_a_hostile_tree_finishes_and_records_the_refused_items(tmp_path: Path) -> None:
    texts = write_texts(tmp_path / "docs", 2)
    write_texts(tmp_path / "private", 1, start=7)
    (tmp_path / "docs" / "loop").symlink_to(tmp_path / "docs", target_is_directory=True)
    (tmp_path / "docs" / "x.txt").symlink_to(tmp_path / "private" / "t007.txt")
    job = write_job(tmp_path, inputs={"files": "docs/**/*.txt"})
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["total"], summary["done"], summary["failed"]) == (3, 2, 1)
    by_id = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    assert "follow_symlinks" in by_id["x.txt"]["error"]["message"]
    names = sorted(texts)
    np.testing.assert_allclose(
        [by_id[n]["output"] for n in names], reference_embeddings([texts[n] for n in names]), atol=2e-5
    )


def test_jsonl_and_csv_lines_over_the_cap_stop_with_a_clear_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"text": "short"}, {"text": "x" * 5000}])
    job = write_job(tmp_path, inputs={"jsonl": "in.jsonl", "field": "text", "max_line_bytes": 1000})
    with pytest.raises(BadInputError, match=r"in\.jsonl:2: line longer than inputs\.max_line_bytes \(1000 bytes\)"):
        taskhub.run_job(job, quiet=True)
    (tmp_path / "in.csv").write_text("text\nshort\n" + "y" * 5000 + "\n")
    job = write_job(tmp_path, "c", inputs={"csv": "in.csv", "field": "text", "max_line_bytes": 1000}, output="c.jsonl")
    with pytest.raises(BadInputError, match=r"in\.csv:3: line longer than inputs\.max_line_bytes"):
        taskhub.run_job(job, quiet=True)
    # a 2 MB line with no newline at all is refused having read at most the cap
    (tmp_path / "huge.jsonl").write_bytes(b'{"text": "' + b"z" * 2_000_000)
    inputs = JobInputs.model_validate({"jsonl": "huge.jsonl", "field": "text", "max_line_bytes": 1000})
    tracemalloc.start()
    try:
        with pytest.raises(BadInputError, match="huge.jsonl:1"):
            list(read_jsonl(tmp_path / "huge.jsonl", inputs))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200_000, peak


def test_a_files_item_over_max_file_bytes_fails_alone(tmp_path: Path) -> None:
    texts = write_texts(tmp_path / "docs", 2)
    (tmp_path / "docs" / "big.txt").write_text("word " * 400)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt", "max_file_bytes": 1000})
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["done"], summary["failed"]) == (2, 1)
    by_id = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    assert by_id["big.txt"]["error"]["message"] == (
        f"{tmp_path / 'docs' / 'big.txt'} is 2000 bytes, over inputs.max_file_bytes (1000)"
    )
    np.testing.assert_allclose(
        [by_id[n]["output"] for n in sorted(texts)], reference_embeddings([texts[n] for n in sorted(texts)]), atol=2e-5
    )


def test_limits_are_validated_in_the_manifest(tmp_path: Path) -> None:
    for bad in ({"files": "*.txt", "max_file_bytes": 0}, {"jsonl": "a.jsonl", "follow_symlinks": True}):
        with pytest.raises(ValueError):
            JobInputs.model_validate(bad)


def _wav_bytes(frames: int, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(frames, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_audio_that_declares_a_tiny_rate_is_refused_before_resampling(tmp_path: Path) -> None:
    from taskhub_audio import load_audio

    path = tmp_path / "one-hertz.wav"
    path.write_bytes(_wav_bytes(200_000, 1))  # 200,000 s at 1 Hz: 12.8 GB of float32 at 16 kHz
    tracemalloc.start()
    try:
        with pytest.raises(BadInputError, match=r"Input 0 \(.*one-hertz.wav\) is 200000 s of audio") as err:
            load_audio(str(path), 0, 16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "TASKHUB_MAX_AUDIO_SECONDS" in str(err.value)
    assert peak < 50_000_000, peak  # not even the 200,000 samples were decoded into a large buffer
    with pytest.raises(BadInputError, match="s of audio"):
        load_audio({"array": np.zeros(5000, dtype=np.float32), "sampling_rate": 1}, 0, 16000)


def test_audio_length_cap_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskhub_audio import load_audio

    two_seconds = _wav_bytes(32000, 16000)
    assert load_audio(two_seconds, 0, 16000).shape == (32000,)
    monkeypatch.setenv("TASKHUB_MAX_AUDIO_SECONDS", "1.5")
    with pytest.raises(BadInputError, match=r"is 2 s of audio \(32000 samples at 16000 Hz\); the limit is 1.5 s"):
        load_audio(two_seconds, 0, 16000)


# Rule 6: the CLI's INPUT


def kind(name: str) -> taskhub.InputKind:
    return taskhub.get_registry().input_kinds.get(name)


def test_cli_input_long_text_is_text_and_folders_fifos_are_errors(tmp_path: Path) -> None:
    long_text = "word " * 200  # 1,000 bytes: once "File name too long"
    assert cli_input(long_text, kind("text")) == long_text
    assert cli_input("a/b\0c", kind("text")) == "a/b\0c"
    (tmp_path / "note.txt").write_text("from a file")
    assert cli_input(str(tmp_path / "note.txt"), kind("text")) == "from a file"
    with pytest.raises(BadInputError, match="is a folder"):
        cli_input(str(tmp_path), kind("text"))
    os.mkfifo(tmp_path / "pipe")
    _unblock_later(tmp_path / "pipe")
    for name in ("text", "audio"):
        with pytest.raises(BadInputError, match="not a regular file"):
            cli_input(str(tmp_path / "pipe"), kind(name))


def test_cli_input_files_and_stdin_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("TASKHUB_MAX_INPUT_BYTES", "100")
    (tmp_path / "big.txt").write_text("x" * 101)
    with pytest.raises(BadInputError, match="over 100 bytes"):
        cli_input(str(tmp_path / "big.txt"), kind("text"))
    stdin = io.TextIOWrapper(io.BytesIO(b"y" * 101))
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(BadInputError, match="stdin is over 100 bytes"):
        cli_input("-", kind("text"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("caf\u00e9".encode())))
    assert cli_input("-", kind("text")) == "caf\u00e9"


def test_cli_run_takes_long_text_as_text_and_refuses_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskhub.cli import main

    long_text = " ".join(sentence(i) for i in range(12))
    assert len(long_text.encode()) > 255  # once: "File name too long"
    assert main(["run", "feature-extraction", long_text, "--json"]) == 0
    vector = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(vector, reference_embeddings([long_text])[0], atol=2e-5)
    assert main(["run", "feature-extraction", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {str(tmp_path)!r} is a folder; expected text, a file or -."]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("[" * 100_000 + "]" * 100_000, "maximum recursion depth exceeded"),
        ('{"text": ' + "9" * 5000 + "}", "4300 digits"),
    ],
)
def test_a_jsonl_line_python_cannot_hold_stops_the_job_naming_the_line(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    job = write_job(tmp_path, inputs={"jsonl": "in.jsonl", "field": "text"})
    with pytest.raises(BadInputError, match=rf"in\.jsonl:2: not valid JSON \(.*{problem}"):
        taskhub.run_job(job, quiet=True)
    assert not (tmp_path / "out.jsonl").exists()
