"""Image tasks from the CLI and in batch jobs: bad images fail alone, with a message naming the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fixtures_batch import read_records
from fixtures_vision import SAMPLE_FILES, png_claiming, vit_classifier  # noqa: F401

import taskhub
from taskhub.batch import run_job
from taskhub.manifest import load_job_manifest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_JOB = ROOT / "manifests" / "jobs" / "vision-classify.yaml"


def test_example_job_is_valid_and_reads_the_sample_images() -> None:
    job = load_job_manifest(EXAMPLE_JOB)
    assert job.task == "image-classification"
    matched = sorted((EXAMPLE_JOB.parent / job.inputs.files).resolve().parent.glob(Path(job.inputs.files).name))
    assert matched == SAMPLE_FILES


def test_example_job_on_the_tiny_model_records_each_image(tmp_path: Path, vit_classifier: Path) -> None:  # noqa: F811
    """The shipped job with only `model` and paths changed; broken files in the folder fail alone."""
    images = tmp_path / "images"
    shutil.copytree(ROOT / "samples" / "images", images)
    (images / "truncated.jpg").write_bytes(SAMPLE_FILES[0].read_bytes()[:2000])
    (images / "notes.png").write_text("this is not a PNG")
    (images / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    body = yaml.safe_load(EXAMPLE_JOB.read_text())
    body.update(model=str(vit_classifier), output=str(tmp_path / "out.jsonl"))
    body["inputs"]["files"] = str(images / Path(body["inputs"]["files"]).name)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(body))

    summary = run_job(job, quiet=True)

    assert (summary["done"], summary["failed"]) == (2, 3)
    records = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    pipe = taskhub.pipeline("image-classification", str(vit_classifier))
    for path in SAMPLE_FILES:
        record = records[path.name]
        assert record["error"] is None
        assert record["output"] == pipe(str(images / path.name), top_k=3)
    problems = {"truncated.jpg": "is corrupt or truncated", "notes.png": "is not an image", "bomb.png": "too large"}
    for name, problem in problems.items():
        error = records[name]["error"]
        assert error["type"] == "BadInputError" and name in error["message"] and problem in error["message"]


@pytest.mark.slow
def test_cli_runs_an_image_task_on_file_paths(vit_classifier: Path, tmp_path: Path) -> None:  # noqa: F811
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"no pixels here")
    command = [
        sys.executable,
        "-m",
        "taskhub.cli",
        "run",
        "image-classification",
        "--model",
        str(vit_classifier),
        "--json",
    ]
    done = subprocess.run(
        [*command, *map(str, SAMPLE_FILES), "--param", "top_k=2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pipe = taskhub.pipeline("image-classification", str(vit_classifier))
    # each process times its own linear kernels, so scores agree to rounding (AMX bf16x3 vs oneDNN), not bits
    expected = pipe([str(p) for p in SAMPLE_FILES], top_k=2)
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        [{**label, "score": pytest.approx(label["score"], abs=1e-5)} for label in image] for image in expected
    ]
    failed = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "bad.jpg" in failed.stderr and "not an image" in failed.stderr


def test_default_model_offline_says_how_to_get_it() -> None:
    with pytest.raises(taskhub.ModelNotAvailableError, match="google/vit-base-patch16-224.*hf download"):
        taskhub.pipeline("image-classification")
