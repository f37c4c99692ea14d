"""Audio tasks from a batch job (the shipped audio-asr job, bad files recorded) and from the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from fixtures_audio import SAMPLES, SPEECH, ctc_model, vits_model  # noqa: F401
from fixtures_batch import read_records

from taskhub import pipeline
from taskhub.batch import run_job
from taskhub.cli import main

JOB = Path(__file__).resolve().parents[1] / "manifests" / "jobs" / "audio-asr.yaml"


def _job_with_model(tmp_path: Path, model: Path, files: str) -> Path:
    """The shipped job manifest with the tiny model in place of the hub one and paths made absolute."""
    body = yaml.safe_load(JOB.read_text())
    body.update(model=str(model), device="cpu", output=str(tmp_path / "asr.jsonl"))
    body["inputs"]["files"] = files
    path = tmp_path / "audio-asr.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_shipped_asr_job_transcribes_the_sample_wavs(ctc_model: Path, tmp_path: Path) -> None:  # noqa: F811
    files = str((JOB.parent / yaml.safe_load(JOB.read_text())["inputs"]["files"]).resolve())
    summary = run_job(_job_with_model(tmp_path, ctc_model, files), quiet=True)
    records = read_records(tmp_path / "asr.jsonl")
    wavs = sorted(SAMPLES.glob("*.wav"))
    assert summary["done"] == len(wavs) == len(records) >= 2
    params = yaml.safe_load(JOB.read_text())["params"]
    direct = pipeline("asr", model=str(ctc_model), device="cpu", **params)
    for record in sorted(records, key=lambda r: r["input"]):
        assert record["error"] is None
        expected = json.loads(json.dumps(direct(record["input"])))  # timestamps: tuples -> lists in JSONL
        assert record["output"] == expected and expected["chunks"]


def test_job_records_bad_audio_and_goes_on(ctc_model: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SPEECH["numbers.wav"], folder / "a-good.wav")
    data = SPEECH["hello.wav"].read_bytes()
    (folder / "b-truncated.wav").write_bytes(data[: len(data) // 2])
    (folder / "c-text.wav").write_text("not audio at all")
    (folder / "d-empty.wav").write_bytes(b"")
    sf.write(folder / "e-stereo-8k.wav", np.stack([np.zeros(4000), np.ones(4000) * 0.1], axis=1), 8000)
    summary = run_job(_job_with_model(tmp_path, ctc_model, str(folder / "*.wav")), quiet=True)
    records = {Path(r["input"]).name: r for r in read_records(tmp_path / "asr.jsonl")}
    assert summary["done"] == 2 and summary["failed"] == 3
    direct = pipeline("asr", model=str(ctc_model), device="cpu")
    assert records["a-good.wav"]["output"]["text"] == direct(str(folder / "a-good.wav"))["text"]
    assert records["e-stereo-8k.wav"]["error"] is None
    expected = {"b-truncated.wav": "truncated", "c-text.wav": "not readable audio", "d-empty.wav": "empty file"}
    for name, words in expected.items():
        error = records[name]["error"]
        assert error["type"] == "BadInputError" and words in error["message"] and name in error["message"]


def test_cli_runs_asr_on_a_file_and_tts_to_a_wav(
    ctc_model: Path,
    vits_model: Path,
    tmp_path: Path,
    capsys,  # noqa: F811
) -> None:
    assert main(["run", "asr", str(SPEECH["numbers.wav"]), "--model", str(ctc_model), "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == pipeline("asr", model=str(ctc_model), device="cpu")(str(SPEECH["numbers.wav"]))
    out = tmp_path / "speech.wav"
    tts_args = ["--model", str(vits_model), "--device", "cpu", "--param", "seed=4", "--output", str(out)]
    assert main(["run", "tts", "hello there", *tts_args]) == 0
    samples, rate = sf.read(out, dtype="float32")
    expected = pipeline("tts", model=str(vits_model), device="cpu")("hello there", seed=4)
    assert rate == expected["sampling_rate"] and len(samples) == len(expected["audio"])
    bad = tmp_path / "bad.wav"
    bad.write_text("text")
    assert main(["run", "asr", str(bad), "--model", str(ctc_model), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "bad.wav) is not readable audio" in err and "Traceback" not in err
