"""Cancellation and shutdown: a client that leaves stops its decoding; SIGTERM lets in-flight streams finish."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import openai
import pytest
import torch
from fixtures_decoding import PAD, build_tokenizer
from fixtures_serve import LiveServer, running_server
from openai.types.chat import ChatCompletionChunk
from prometheus_client.parser import text_string_to_metric_families
from taskhub_textgen.api import EngineStats, model_engine
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
    assert list(deltas) == [] and all(d.index == 0 and d.text for d in first)
    with pytest.raises(RuntimeError):
        submission.outcome()  # the generation never reached its end


def test_cancelled_n_submission_streams_every_choice_then_stops(long_llama: str) -> None:
    pipe = taskhub.pipeline("text-generation", long_llama)
    params = {"max_new_tokens": 3000, "do_sample": True, "seed": 3, "logit_bias": {2: -100.0}}
    submission = Submission(pipe, CHAT, params, n=3)
    deltas = submission.deltas()
    first = [next(deltas) for _ in range(9)]
    submission.cancel()
    assert list(deltas) == [] and {d.index for d in first} == {0, 1, 2} and all(d.text for d in first)
    engine = model_engine(pipe.model)
    assert engine is not None
    assert wait_until(lambda: engine.stats().blocks_used + engine.stats().running == 0)


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


def engine_stats(live: LiveServer, model: str) -> EngineStats:
    """The served model's engine counters, read from the engine itself (not from the server's metrics)."""
    pipe = next(p for p in live.app.state.server.catalog.loaded() if p.model_id == model)
    engine = model_engine(pipe.model)
    assert engine is not None, "the served llama decodes on the generation engine"
    return engine.stats()


def wait_until(condition: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def assert_idle(live: LiveServer, model: str) -> None:
    """Every sequence of the request cancelled: no engine work, no KV block held, no slot held."""
    assert wait_until(lambda: engine_stats(live, model).running + engine_stats(live, model).waiting == 0)
    assert wait_until(lambda: engine_stats(live, model).blocks_used == 0)
    assert wait_until(lambda: live.metric("taskhub_running_requests") == 0)
    assert live.app.state.server.runner.live == set()


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
        assert_idle(live, long_llama)
        assert live.metric(f'taskhub_cancelled_generations_total{{model="{long_llama}"}}') == 1
        assert live.metric(f'taskhub_time_to_first_token_seconds_count{{model="{long_llama}"}}') == 0  # never finished
        assert live.app.state.server.runner.live == set()
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model=long_llama, messages=CHAT, max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens == 4  # the only worker thread is free again


def request_three_long_choices(live: LiveServer, model: str, stream: bool) -> http.client.HTTPConnection:
    """A raw connection that has sent a 3000-token, n = 3 sampled chat request (the test decides when to hang up)."""
    host, port = live.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    body = {"model": model, "messages": CHAT, "max_tokens": 3000, "n": 3, "temperature": 1.0, "seed": 1,
            "stream": stream, "logit_bias": {"2": -100}}  # fmt: skip
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    return connection


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_all_n_sequences(long_llama: str, stream: bool) -> None:
    settings = ServeSettings(models=(ServedModel("text-generation", long_llama),), max_running=1)
    with running_server(settings) as live:
        connection = request_three_long_choices(live, long_llama, stream)
        assert wait_until(lambda: engine_stats(live, long_llama).running == 1)  # all 3 rows decoding
        assert wait_until(lambda: engine_stats(live, long_llama).blocks_used >= 3)
        connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        assert_idle(live, long_llama)
        assert live.metric(f'taskhub_cancelled_generations_total{{model="{long_llama}"}}') == 1
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model=long_llama, messages=CHAT, max_tokens=4, n=2, temperature=1.0)
        assert [c.index for c in reply.choices] == [0, 1] and reply.usage.completion_tokens == 8  # slot free again


def test_disconnect_mid_stream_frees_all_n_streaming_sequences(long_llama: str) -> None:
    settings = ServeSettings(models=(ServedModel("text-generation", long_llama),), max_running=1)
    with running_server(settings) as live:
        connection = request_three_long_choices(live, long_llama, stream=True)
        response = connection.getresponse()
        assert response.status == 200
        seen: set[int] = set()
        while seen != {0, 1, 2}:  # every choice is streaming before the client leaves
            line = response.readline()
            if line.startswith(b"data:"):
                chunk = json.loads(line.removeprefix(b"data:"))
                assert chunk["choices"][0]["finish_reason"] is None
                seen.add(chunk["choices"][0]["index"])
        assert engine_stats(live, long_llama).blocks_used >= 3
        connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        assert_idle(live, long_llama)
        assert live.metric(f'taskhub_cancelled_generations_total{{model="{long_llama}"}}') == 1


def test_timeout_cancels_all_n_sequences(long_llama: str) -> None:
    settings = ServeSettings(models=(ServedModel("text-generation", long_llama),), timeout_s=1.5)
    with running_server(settings) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model=long_llama, messages=CHAT, max_tokens=3000, n=2, temperature=1.0, logit_bias={"2": -100}
            )
        assert caught.value.status_code == 504 and caught.value.body["code"] == "timeout"
        assert_idle(live, long_llama)
        stream = client.chat.completions.create(
            model=long_llama, messages=CHAT, max_tokens=3000, n=3, temperature=1.0, logit_bias={"2": -100}, stream=True
        )
        indexes = set()
        with pytest.raises(openai.APIError, match="timeout"):  # the stream's error event, mid-stream
            for chunk in stream:
                indexes.update(c.index for c in chunk.choices)
        assert indexes == {0, 1, 2}  # all three were streaming when the deadline passed
        assert_idle(live, long_llama)


def scrape(url: str) -> dict[str, float]:
    """/metrics over HTTP, parsed by prometheus_client's own parser: {name{labels}: value}."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_metrics_report_engine_cache_latencies_and_statuses(long_llama: str) -> None:
    settings = ServeSettings(models=(ServedModel("text-generation", long_llama),))
    with running_server(settings) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        for _ in range(2):  # the second request finds the first one's prompt blocks in the prefix cache
            client.chat.completions.create(model=long_llama, messages=CHAT * 20, max_tokens=6, temperature=0)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=CHAT)
        connection = open_stream(live.url, {"model": long_llama, "messages": CHAT, "max_tokens": 3000,
                                            "temperature": 0, "stream": True, "logit_bias": {"2": -100}})  # fmt: skip
        label = f'model="{long_llama}"'
        busy, stats = scrape(live.url), engine_stats(live, long_llama)
        assert busy[f"taskhub_kv_blocks_used{{{label}}}"] >= 1 and busy["taskhub_running_requests"] == 1
        assert busy[f"taskhub_prefix_cache_hit_rate{{{label}}}"] == pytest.approx(stats.prefix_hit_rate, abs=0.05)
        assert busy[f"taskhub_prefix_cache_hit_rate{{{label}}}"] > 0
        connection.close()
        assert_idle(live, long_llama)
        idle = scrape(live.url)
        assert idle[f"taskhub_kv_blocks_used{{{label}}}"] == 0
        assert idle[f"taskhub_time_to_first_token_seconds_count{{{label}}}"] == 2
        assert idle[f"taskhub_time_per_output_token_seconds_count{{{label}}}"] == 2
        assert idle['taskhub_requests_total{route="/v1/chat/completions",status="200"}'] == 3  # the stream's too
        assert idle['taskhub_requests_total{route="/v1/chat/completions",status="404"}'] == 1
        assert idle["taskhub_queue_depth"] == 0


@contextmanager
def cli_server(model: str, grace_s: float) -> Iterator[tuple[subprocess.Popen, str]]:
    """`taskhub serve` as a real process (so it can get SIGTERM); yields it and its URL once healthy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "taskhub.cli", "serve", "--model", model, "--port", str(port),
               "--grace", str(grace_s)]  # fmt: skip
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
        yield server, url
    finally:
        if server.poll() is None:
            server.kill()
        output = server.stdout.read().decode() if server.stdout else ""
        assert "Traceback" not in output, output


def greedy_stream(url: str, model: str, max_tokens: int) -> Iterator[ChatCompletionChunk]:
    """The chunks of a streamed greedy chat reply of exactly max_tokens tokens (EOS banned) from the server at url."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=max_tokens, temperature=0, stream=True, logit_bias={"2": -100}
    )
    return iter(stream)


@pytest.mark.slow
def test_sigterm_lets_an_inflight_stream_finish(long_llama: str) -> None:
    with cli_server(long_llama, grace_s=60) as (server, url):
        chunks = greedy_stream(url, long_llama, max_tokens=40)
        first = next(chunks)
        server.send_signal(signal.SIGTERM)
        rest = list(chunks)
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
        assert rest[-1].choices[0].finish_reason == "length" and text
        assert server.wait(timeout=120) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=2)  # no longer accepting


@pytest.mark.slow
def test_sigterm_cancels_a_stream_that_outlives_the_grace(long_llama: str) -> None:
    with cli_server(long_llama, grace_s=1) as (server, url):
        chunks = greedy_stream(url, long_llama, max_tokens=4000)
        next(chunks)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        reasons = []
        with contextlib.suppress(openai.APIError):  # the server may cut the connection
            reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert "length" not in reasons  # cancelled, not finished: 4000 tokens take far longer than the grace
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < 30
