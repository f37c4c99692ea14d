"""POST /v1/tasks/{task} over any task: JSON in and out, media as base64 or data: URIs, no server paths."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_plugins import ODD_TASK, OddResults, installed, write_manifest
from fixtures_serve import LiveServer, running_server
from fixtures_vision import vit_classifier  # noqa: F401
from PIL import Image

import taskhub
from taskhub.serve import ServedModel, ServeSettings


@pytest.fixture(scope="module")
def server(vit_classifier: Path) -> Iterator[LiveServer]:  # noqa: F811
    settings = ServeSettings(models=(ServedModel("image-classification", str(vit_classifier)),))
    with running_server(settings) as live:
        yield live


def post(server: LiveServer, path: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def png() -> tuple[Image.Image, bytes]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return image, buffer.getvalue()


def test_image_as_base64_and_data_uri_equals_run_task(server: LiveServer, vit_classifier: Path, png) -> None:  # noqa: F811
    image, data = png
    expected = taskhub.run_task("image-classification", image, model=str(vit_classifier), top_k=3)
    b64 = base64.b64encode(data).decode()
    status, body = post(server, "/v1/tasks/image-classification", {"inputs": b64, "parameters": {"top_k": 3}})
    assert status == 200 and body["task"] == "image-classification" and body["outputs"] == expected
    status, body = post(
        server,
        "/v1/tasks/image-classification",
        {"inputs": [f"data:image/png;base64,{b64}"] * 2, "parameters": {"top_k": 3}},
    )
    assert status == 200 and body["outputs"] == [expected, expected]


def test_text_task_with_its_default_model_equals_run_task(server: LiveServer) -> None:
    pair = {"source_sentence": "A man plays a guitar.", "sentences": ["Someone plays music.", "The sky is blue."]}
    status, body = post(server, "/v1/tasks/sentence-similarity", {"inputs": pair})
    assert status == 200 and body["outputs"] == taskhub.run_task("sentence-similarity", pair)


def test_server_paths_and_urls_are_refused(server: LiveServer, png) -> None:
    for value in ["/etc/passwd", "images/cat.png", "https://example.com/cat.png"]:
        status, body = post(server, "/v1/tasks/image-classification", {"inputs": value})
        assert status == 400 and body["error"]["code"] == "local_files_disabled", value
        assert body["error"]["param"] == "inputs"
    status, body = post(server, "/v1/tasks/image-classification", {"inputs": ["/etc/passwd"]})
    assert status == 400 and body["error"]["param"] == "inputs.0"


def test_bad_task_requests_are_400(server: LiveServer) -> None:
    status, body = post(server, "/v1/tasks/image-classification", {"image": "x"})
    assert status == 400 and body["error"]["param"] == "inputs"
    status, body = post(server, "/v1/tasks/image-classification", {"inputs": "aGVsbG8=", "parameters": {"top_kk": 1}})
    assert status == 400 and "top_k" in body["error"]["message"]  # the ParamError lists the valid names
    status, body = post(server, "/v1/tasks/image-classification", {"inputs": "aGVsbG8="})  # base64 of "hello"
    assert status == 400 and "image" in body["error"]["message"]
    status, body = post(server, "/v1/tasks/image-classification", {"inputs": "aGVsbG8=", "model": "/tmp/other"})
    assert status == 404 and body["error"]["param"] == "model"


def test_tasks_listing(server: LiveServer, vit_classifier: Path) -> None:  # noqa: F811
    with urllib.request.urlopen(server.url + "/v1/tasks", timeout=30) as response:
        rows = {row["task"]: row for row in json.loads(response.read())["data"]}
    assert set(rows) == {e.manifest.task for e in taskhub.get_registry().tasks()}
    assert rows["image-classification"]["models"] == [str(vit_classifier)]
    assert rows["feature-extraction"]["models"] == ["sentence-transformers/all-MiniLM-L6-v2"]


def test_allow_local_files_lets_inputs_name_server_files(vit_classifier: Path, png, tmp_path: Path) -> None:  # noqa: F811
    image, data = png
    (tmp_path / "cat.png").write_bytes(data)
    settings = ServeSettings(models=(ServedModel("image-classification", str(vit_classifier)),), allow_local_files=True)
    with running_server(settings) as live:
        status, body = post(live, "/v1/tasks/image-classification", {"inputs": str(tmp_path / "cat.png")})
    assert status == 200
    assert body["outputs"] == taskhub.run_task("image-classification", image, model=str(vit_classifier))


def test_a_result_json_cannot_hold_is_an_openai_error_not_a_crash(tmp_path: Path) -> None:
    """NaN, infinity, a set, an object: a 500 naming the result and what results must be, as batch records do."""
    write_manifest(tmp_path / "m", "odd", ODD_TASK)
    with installed(OddResults(tmp_path / "m"), "odd"), running_server(ServeSettings(tasks=("odd-results",))) as live:
        assert post(live, "/v1/tasks/odd-results", {"inputs": ["first", "bytes"]}) == (
            200,
            {"task": "odd-results", "model": None, "outputs": ["FIRST", base64.b64encode(b"\x00").decode()]},
        )
        for name in ("nan", "inf", "set", "object"):
            status, body = post(live, "/v1/tasks/odd-results", {"inputs": ["first", name]})
            assert status == 500, (name, body)
            error = body["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
            assert error["message"].startswith("the result cannot be written as JSON"), error
            assert "finite numbers" in error["message"] and "Traceback" not in error["message"]
        assert post(live, "/v1/tasks/odd-results", {"inputs": "again"})[0] == 200  # the server goes on
