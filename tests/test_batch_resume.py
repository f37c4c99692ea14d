"""Resume: a SIGKILLed job rerun ends with every input exactly once; torn lines and Ctrl-C leave no damage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_batch import read_records, reference_embeddings, sentence, write_job, write_jsonl, write_texts
from fixtures_decoding import PAD, decoding_model_dirs, decoding_models  # noqa: F401  (session fixtures)

import taskhub

RUN = "import json, sys, taskhub; print(json.dumps(taskhub.run_job(sys.argv[1])))"


def _start(job: Path) -> subprocess.Popen[str]:
    # one torch thread: two threads per process thrash on a busy 2-core machine
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(job)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait_for_lines(proc: subprocess.Popen[str], path: Path, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _lines(path) < count:
        assert proc.poll() is None, f"job ended before {count} records: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "job made no progress"
        time.sleep(0.005)


def _kill_after(job: Path, out: Path, lines: int) -> None:
    """Run the job and SIGKILL it once `lines` records are in `out`."""
    proc = _start(job)
    _wait_for_lines(proc, out, lines)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.communicate()


def _rerun_to_the_end(job: Path, out: Path, n: int) -> tuple[dict, dict[str, object]]:
    """Rerun the job to completion; every id k0..k{n-1} is in `out` exactly once. Returns its summary and outputs."""
    proc = _start(job)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["remaining"] == 0 and summary["failed"] == 0
    records = read_records(out)
    counts = Counter(r["id"] for r in records)
    assert set(counts) == {f"k{i}" for i in range(n)} and set(counts.values()) == {1}
    return summary, {r["id"]: r["output"] for r in records}


def _big_job(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    texts = [sentence(i) for i in range(n)]
    write_jsonl(tmp_path / "in.jsonl", [{"key": f"k{i}", "text": t} for i, t in enumerate(texts)])
    return write_job(tmp_path, inputs={"jsonl": "in.jsonl", "field": "text", "id_field": "key"}, batch_size=2), texts


@pytest.mark.slow
def test_sigkill_at_any_point_then_rerun_gives_every_input_exactly_once(tmp_path: Path) -> None:
    job, texts = _big_job(tmp_path, 160)
    out = tmp_path / "out.jsonl"
    for lines in (6, 50):  # killed twice, further along each time
        _kill_after(job, out, lines)
    assert 50 <= _lines(out) < len(texts)
    summary, by_id = _rerun_to_the_end(job, out, len(texts))
    assert summary["skipped"] >= 50
    got = np.array([by_id[f"k{i}"] for i in range(len(texts))])
    np.testing.assert_allclose(got, reference_embeddings(texts), atol=2e-5)


@pytest.mark.slow
def test_sigkilled_generation_job_rerun_gives_every_id_once_with_transformers_text(
    tmp_path: Path, decoding_model_dirs, decoding_models
) -> None:
    """text-generation runs through the engine with a wide window of batches in flight, records written in
    completion order: a kill and a rerun still give every id exactly once, each with its own continuation."""
    model, tokenizer = decoding_models["llama"]
    prompts = [sentence(i) for i in range(100)]
    write_jsonl(tmp_path / "in.jsonl", [{"key": f"k{i}", "text": t} for i, t in enumerate(prompts)])
    params = {"max_new_tokens": 24, "return_full_text": False}
    inputs = {"jsonl": "in.jsonl", "field": "text", "id_field": "key"}
    job = write_job(
        tmp_path,
        task="text-generation",
        model=str(decoding_model_dirs["llama"]),
        inputs=inputs,
        batch_size=2,
        params=params,
    )
    out = tmp_path / "out.jsonl"
    _kill_after(job, out, 1)
    assert 1 <= _lines(out) < len(prompts)
    summary, by_id = _rerun_to_the_end(job, out, len(prompts))
    assert summary["skipped"] >= 1
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt)["input_ids"]
        generated = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, pad_token_id=PAD)
        expected = tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=True)
        assert by_id[f"k{i}"] == [{"generated_text": expected}], i


def test_a_torn_last_line_is_dropped_and_its_item_redone(tmp_path: Path) -> None:
    texts = write_texts(tmp_path / "docs", 4)
    job = write_job(tmp_path, inputs={"files": "docs/*.txt"}, batch_size=1)
    taskhub.run_job(job, limit=3, quiet=True)
    out = tmp_path / "out.jsonl"
    done = {r["id"] for r in read_records(out)}
    (missing,) = set(texts) - done
    whole = out.read_bytes()
    torn = json.dumps({"id": missing, "input": "x", "output": [0.5, 0.25]})[:30].encode()  # a write cut short
    out.write_bytes(whole + torn)
    dry = taskhub.run_job(job, dry_run=True, quiet=True)
    assert (dry["skipped"], dry["to_run"]) == (3, 1) and out.read_bytes().endswith(torn)  # a dry run changes nothing
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["skipped"], summary["done"]) == (3, 1)
    assert out.read_bytes().startswith(whole) and out.read_bytes().endswith(b"\n")
    records = read_records(out)
    assert sorted(r["id"] for r in records) == sorted(texts)
    np.testing.assert_allclose(records[-1]["output"], reference_embeddings([texts[missing]])[0], atol=2e-5)


@pytest.mark.slow
def test_sigint_stops_after_the_current_batch_with_the_output_intact(tmp_path: Path) -> None:
    job, texts = _big_job(tmp_path, 240)
    out = tmp_path / "out.jsonl"
    proc = _start(job)
    _wait_for_lines(proc, out, 6)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["stopped"] == "interrupted" and summary["remaining"] > 0
    assert "stopping after the current batch" in stderr
    assert out.read_bytes().endswith(b"\n")
    records = read_records(out)
    assert len(records) == summary["done"] == len(texts) - summary["remaining"]
