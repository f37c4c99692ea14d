"""Hostile manifests end in one ManifestError naming the file; `manifest validate` checks stage params."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskhub.cli import main
from taskhub.errors import ManifestError
from taskhub.manifest import load_job_manifest, load_task_manifest

GOOD_TASK = "task: shout-{n}\nmodality: text\ninput: text\nmodel_stage: {{stage: text.tokenize}}\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_duplicate_key_is_an_error_with_its_line(tmp_path):
    path = write(tmp_path, "dup.yaml", "task: a\nmodality: text\ninput: text\ntask: b\n")
    with pytest.raises(ManifestError) as err:
        load_task_manifest(path)
    assert f"{path}:4" in str(err.value) and "duplicate key 'task'" in str(err.value) and "line 1" in str(err.value)


def test_duplicate_key_nested(tmp_path):
    path = write(
        tmp_path, "dup.yaml", "job: j\ntask: t\ninputs:\n  jsonl: a.jsonl\n  jsonl: b.jsonl\noutput: o.jsonl\n"
    )
    with pytest.raises(ManifestError, match=rf"{path}:5: .*duplicate key 'jsonl'"):
        load_job_manifest(path)


@pytest.mark.parametrize(
    "body",
    [
        "task: " + "[" * 5000 + "]" * 5000 + "\n",  # deep flow nesting: the YAML composer recurses
        "task:\n" + "".join("  " * i + "- \n" for i in range(200)),  # deep block nesting
        "task: " + "9" * 5000 + "\n",  # beyond Python's int-from-string limit
        "task: 1\nbatching: {batch_size: 99999999999999999999999}\n",  # beyond 64 bits
        # "billion laughs": aliases that expand to 9**7 values
        "a: &a [1,1,1,1,1,1,1,1,1]\n"
        + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdef", "bcdefg")),
    ],
    ids=["deep-flow", "deep-block", "huge-int", "int-over-64-bits", "alias-bomb"],
)
def test_hostile_yaml_is_a_manifest_error_naming_the_file(tmp_path, body):
    path = write(tmp_path, "hostile.yaml", body)
    with pytest.raises(ManifestError, match=str(path)):
        load_task_manifest(path)


def test_validate_reports_each_bad_file_and_goes_on(tmp_path, capsys):
    hostile = write(tmp_path, "deep.yaml", "task: " + "[" * 5000 + "]" * 5000 + "\n")
    dup = write(tmp_path, "dup.yaml", "task: a\ntask: b\n")
    good = write(tmp_path, "good.yaml", GOOD_TASK.format(n=1))
    assert main(["manifest", "validate", str(hostile), str(dup), str(good)]) == 1
    out, err = capsys.readouterr()
    assert f"{good}: ok (task manifest)" in out
    assert str(hostile) in err and f"{dup}:2" in err


def test_validate_checks_stage_params_with_line(tmp_path, capsys):
    path = write(
        tmp_path,
        "params.yaml",
        "task: emb\nmodality: text\ninput: text\npreprocess:\n  - stage: text.tokenize\n    params:\n"
        "      max_lenght: 8\nmodel_stage: {stage: text.encode}\npostprocess:\n"
        "  - stage: text.pool\n    params: {pooling: maximum}\n",
    )
    assert main(["manifest", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:7: preprocess.0.params.max_lenght: Extra inputs are not permitted" in err
    assert f"{path}:11: postprocess.0.params.pooling" in err and "'mean'" in err


def test_a_fifo_or_folder_named_as_a_manifest_is_an_error_not_a_hang(tmp_path, capsys):
    from test_batch_input_limits import _unblock_later

    fifo = tmp_path / "job.yaml"
    os.mkfifo(fifo)
    _unblock_later(fifo)  # should a reader block, this ends the read and the asserts below fail instead
    assert main(["manifest", "validate", str(fifo), str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{fifo}: not a regular file (a FIFO, socket or device); a manifest is a YAML file",
        f"{tmp_path}: a folder; a manifest is a YAML file",
    ]
    assert main(["batch", str(fifo)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: {fifo}: not a regular file (a FIFO, socket or device); a manifest is a YAML file\n"
    )
