"""Task and job manifests: validation, error messages with file/line/field, JSON Schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from taskhub.errors import ManifestError
from taskhub.manifest import json_schema, load_job_manifest, load_task_manifest

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def test_every_builtin_task_manifest_validates_and_matches_schema():
    schema = json_schema("task")
    paths = sorted((MANIFESTS / "tasks").glob("*/*.yaml"))
    assert paths
    for path in paths:
        manifest = load_task_manifest(path)
        assert manifest.task == path.stem
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: x\nmodality: text\n  input: [unclosed\n")
    with pytest.raises(ManifestError) as err:
        load_task_manifest(path)
    # PyYAML puts the problem at line 3, column 8: the ":" after "input", indented under a scalar
    assert str(err.value).startswith(f"{path}:3: ")
    assert "invalid YAML" in str(err.value) and "mapping values are not allowed here" in str(err.value)


def test_schema_error_names_line_and_field_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "task: shout\nmodality: text\ninput: text\nmodel_stage:\n  stage: fake.upper\n  parms: {}\n"
        "postprocess:\n  - stage: NotDotted\n"
    )
    with pytest.raises(ManifestError) as err:
        load_task_manifest(path)
    message = str(err.value)
    assert f"{path}:6: model_stage.parms: Extra inputs are not permitted" in message
    assert f"{path}:8: postprocess.0.stage" in message


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("task: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ManifestError, match="invalid YAML"):
        load_task_manifest(path)


def test_job_manifest_needs_exactly_one_input_source(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("job: j\ntask: t\ninputs: {files: '*.txt', jsonl: a.jsonl}\noutput: out.jsonl\n")
    with pytest.raises(ManifestError, match="exactly one of files, jsonl, csv"):
        load_job_manifest(path)
    path.write_text("job: j\ntask: t\ninputs: {jsonl: a.jsonl, field: text}\noutput: out.jsonl\nworkers: 0\n")
    with pytest.raises(ManifestError, match=r"job.yaml:5: workers"):
        load_job_manifest(path)


def test_job_schema_validates_example_jobs():
    schema = json_schema("job")
    for path in sorted((MANIFESTS / "jobs").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
        load_job_manifest(path)
