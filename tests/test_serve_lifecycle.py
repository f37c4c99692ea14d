"""Cancellation and shutdown: a client that leaves stops its decoding; SIGTERM lets in-flight streams finish."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import openai
import pytest
import torch
from fixtures_decoding import PAD, build_tokenizer
from fixtures_serve import running_server
from transformers import LlamaConfig, LlamaForCausalLM

import taskhub
from taskhub.serve import ServedModel, ServeSettings
from taskhub.serve.generation import Submission

CHAT = [{"role": "user", "content": "The quick brown fox"}]


@pytest.fixture(scope="module")
def long_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny llama with a 4096-token context, so one request can decode for seconds."""
    path = tmp_path_factory.mktemp("long_llama")
    tokenizer = build_tokenizer(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.2, pad_token_id=PAD,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = PAD
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


def test_cancelled_submission_stops_decoding(long_llama: str) -> None:
    pipe = taskhub.pipeline("text-generation", long_llama)
    submission = Submission(pipe, CHAT, {"max_new_tokens": 3000, "do_sample": False, "logit_bias": {2: -100.0}})
    deltas = submission.deltas()
    first = [next(deltas), next(deltas)]
    submission.cancel()
    assert list(deltas) == [] and all(index == 0 and text for index, text in first)
    with pytest.raises(RuntimeError):
        submission.outcome()  # the generation never reached its end


def open_stream(url: str, body: dict) -> http.client.HTTPConnection:
    """POST a streaming request and read until its first data line; the connection stays open."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    while not response.readline().startswith(b"data:"):
        pass
    return connection


def test_client_disconnect_cancels_its_generation(long_llama: str) -> None:
    settings = ServeSettings(models=(ServedModel("text-generation", long_llama),), max_running=1)
    with running_server(settings) as live:
        body = {"model": long_llama, "messages": CHAT, "max_tokens": 3000, "temperature": 0, "stream": True,
                "logit_bias": {"2": -100}}  # fmt: skip
        connection = open_stream(live.url, body)
        assert live.metric("taskhub_running_requests") == 1
        connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        deadline = time.monotonic() + 30
        while live.metric("taskhub_running_requests") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.metric("taskhub_running_requests") == 0
        assert live.metric(f'taskhub_cancelled_generations_total{{model="{long_llama}"}}') == 1
        assert live.metric(f'taskhub_time_to_first_token_seconds_count{{model="{long_llama}"}}') == 0  # never finished
        assert live.app.state.server.runner.live == set()
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model=long_llama, messages=CHAT, max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens == 4  # the only worker thread is free again


@pytest.mark.slow
def test_sigterm_lets_an_inflight_stream_finish(long_llama: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "taskhub.cli",
        "serve",
        "--model",
        long_llama,
        "--port",
        str(port),
        "--grace",
        "60",
    ]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # importing torch and loading can be slow on a busy machine
        while time.monotonic() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        stream = client.chat.completions.create(
            model=long_llama, messages=CHAT, max_tokens=40, temperature=0, stream=True, logit_bias={"2": -100}
        )
        chunks = iter(stream)
        first = next(chunks)
        server.send_signal(signal.SIGTERM)
        rest = list(chunks)
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
        assert rest[-1].choices[0].finish_reason == "length" and text
        assert server.wait(timeout=120) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=2)  # no longer accepting
    finally:
        if server.poll() is None:
            server.kill()
        output = server.stdout.read().decode() if server.stdout else ""
        assert "Traceback" not in output, output
