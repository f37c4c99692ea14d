"""Errors of `taskhub serve` in OpenAI's shape and status: 400 naming the field, 401, 404, 413, 429 — never a traceback."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fixtures_decoding import decoding_model_dirs  # noqa: F401
from fixtures_serve import LiveServer, running_server

import taskhub
from taskhub.cli import build_parser
from taskhub.serve import ServedModel, ServeSettings, settings_from_args

KEY = "sekrit-key"
CHAT = [{"role": "user", "content": "The quick brown fox"}]


@pytest.fixture(scope="module")
def llama(decoding_model_dirs: dict[str, Path]) -> str:  # noqa: F811
    return str(decoding_model_dirs["llama"])


@pytest.fixture(scope="module")
def server(llama: str) -> Iterator[LiveServer]:
    settings = ServeSettings(models=(ServedModel("text-generation", llama),), api_key=KEY, max_body_bytes=4096)
    with running_server(settings) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def http(method: str, url: str, body: bytes | None = None, key: str | None = KEY) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one raw request."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def assert_openai_error(body: dict, param: str | None = None) -> dict:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_bad_field_is_400_naming_it(client: openai.OpenAI, llama: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=llama, messages=CHAT, temperature=5)
    error = assert_openai_error(caught.value.body and {"error": caught.value.body}, "temperature")
    assert error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=llama, messages=CHAT, extra_body={"top_kk": 3})
    assert "top_k" in caught.value.body["message"] and caught.value.body["param"] == "top_kk"
    with pytest.raises(openai.BadRequestError) as caught:  # greedy cannot give n different answers
        client.chat.completions.create(model=llama, messages=CHAT, n=2, temperature=0)
    assert "greedy" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=llama, messages=CHAT, tools=[{"type": "function", "function": {"name": "f"}}]
        )
    assert caught.value.body["param"] == "tools"


def test_invalid_json_and_shapes_are_400(server: LiveServer) -> None:
    status, _, body = http("POST", f"{server.url}/v1/chat/completions", b"{not json")
    assert status == 400 and assert_openai_error(body)["code"] == "invalid_json"
    status, _, body = http("POST", f"{server.url}/v1/chat/completions", b'{"model": "x"}')
    assert status == 400 and assert_openai_error(body, "messages")


def test_unknown_model_task_and_route_are_404(client: openai.OpenAI, server: LiveServer, llama: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="/etc/passwd", messages=CHAT)
    assert caught.value.body["param"] == "model" and llama in caught.value.body["message"]
    status, _, body = http("POST", f"{server.url}/v1/tasks/no-such-task", b'{"inputs": "x"}')
    assert status == 404 and assert_openai_error(body, "task")
    status, _, body = http("GET", f"{server.url}/v1/nothing-here")
    assert status == 404 and assert_openai_error(body)
    with pytest.raises(openai.NotFoundError):  # feature-extraction is exposed, but this model is not its
        client.embeddings.create(model=llama, input="x")


def test_api_key_is_required_everywhere_but_health(server: LiveServer, llama: str) -> None:
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model=llama, messages=CHAT)
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/v1/tasks"), ("POST", "/v1/embeddings")]:
        status, headers, body = http(method, server.url + path, b"{}" if method == "POST" else None, key=None)
        assert status == 401 and headers["www-authenticate"] == "Bearer", path
        assert_openai_error(body)
    status, _, body = http("GET", f"{server.url}/health", key=None)
    assert status == 200 and body == {"status": "ok"}


def test_body_over_the_limit_is_413(client: openai.OpenAI, server: LiveServer, llama: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=llama, messages=[{"role": "user", "content": "x" * 5000}])
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"
    assert server.metric('taskhub_requests_total{route="/v1/chat/completions",status="413"}') >= 1


def test_full_queue_is_429_with_retry_after(llama: str) -> None:
    settings = ServeSettings(models=(ServedModel("text-generation", llama),), max_running=1, max_queue=1)
    with running_server(settings) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        outcomes: list[object] = []
        start = threading.Barrier(8)

        def ask() -> None:
            start.wait()
            try:
                reply = client.chat.completions.create(model=llama, messages=CHAT, max_tokens=200, temperature=0)
                outcomes.append(reply.choices[0].finish_reason)
            except openai.RateLimitError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
        assert len(outcomes) == 8 and 1 <= len(refused) <= 6  # two fit (one running, one queued)
        assert all(o in ("stop", "length") for o in outcomes if o not in refused)
        for exc in refused:
            assert exc.status_code == 429 and exc.response.headers["retry-after"] == "1"
            assert exc.body["type"] == "rate_limit_error" and exc.body["code"] == "queue_full"
        assert live.metric("taskhub_running_requests") == live.metric("taskhub_queue_depth") == 0


def test_cli_flags_and_secure_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKHUB_API_KEY", "from-env")
    defaults = settings_from_args(build_parser().parse_args(["serve"]))
    assert defaults.host == "127.0.0.1" and defaults.api_key == "from-env" and not defaults.allow_local_files
    args = ["serve", "--model", "m1", "--model", "feature-extraction=m2", "--task", "text-generation",
            "--api-key", "k", "--max-queue", "3", "--max-body-bytes", "1000", "--timeout", "5", "--grace", "2"]  # fmt: skip
    settings = settings_from_args(build_parser().parse_args(args))
    assert settings.models == (ServedModel("text-generation", "m1"), ServedModel("feature-extraction", "m2"))
    assert (settings.tasks, settings.api_key, settings.max_queue, settings.max_body_bytes) == (
        ("text-generation",), "k", 3, 1000)  # fmt: skip
    assert (settings.timeout_s, settings.grace_s) == (5.0, 2.0)
    with pytest.raises(taskhub.TaskhubError, match="--max-body-bytes"):
        settings_from_args(build_parser().parse_args(["serve", "--max-body-bytes", "0"]))


def test_values_the_task_refuses_are_400_even_when_streaming(client: openai.OpenAI, llama: str) -> None:
    for stream in (False, True):  # the SSE response starts only once the first chunk exists
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=llama, messages=CHAT, stream=stream, extra_body={"top_k": -3})
        assert_openai_error({"error": caught.value.body})
        assert "top_k" in caught.value.body["message"]
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=llama, messages=CHAT, stream=stream, n=2, temperature=0)
        assert "greedy" in caught.value.body["message"]


def test_a_chat_message_the_task_refuses_is_400_naming_it(client: openai.OpenAI, llama: str) -> None:
    """A role that is not system/user/assistant/tool reached the chat template; a non-string role never parsed."""
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=llama,
                messages=[*CHAT, {"role": "villain", "content": "x"}],
                stream=stream,  # type: ignore[list-item]
            )
        error = assert_openai_error({"error": caught.value.body})
        assert error["message"].startswith("Input 0: message 1 has role 'villain'; expected one of system, user")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=llama, messages=[{"role": 5, "content": None}])  # type: ignore[list-item]
    assert_openai_error({"error": caught.value.body}, "messages.0.role")
