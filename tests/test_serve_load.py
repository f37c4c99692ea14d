"""Many clients at once: every streamed output equals the offline run_task result for its seed; no 5xx;
clients that leave mid-stream free their KV blocks (the engine ends idle)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import openai
import pytest
from fixtures_decoding import EOS, decoding_model_dirs  # noqa: F401
from fixtures_serve import running_server
from taskhub_textgen.api import model_engine

import taskhub
from taskhub.serve import ServedModel, ServeSettings

CLIENTS, REQUESTS = 32, 4
LEAVERS = 8  # more clients, each dropping a long stream after its first chunk
PROMPTS = ["The quick brown fox", "Summaries keep", "Café crème", "A stop string may"]


@pytest.mark.slow
def test_32_streaming_clients_get_their_offline_outputs(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    model = str(decoding_model_dirs["llama"])
    jobs = {
        (c, r): ([{"role": "user", "content": PROMPTS[(c + r) % len(PROMPTS)]}], c * REQUESTS + r)
        for c in range(CLIENTS)
        for r in range(REQUESTS)
    }
    expected = {
        key: taskhub.run_task(
            "text-generation",
            messages,
            model=model,
            max_new_tokens=16,
            do_sample=True,
            temperature=0.9,
            seed=seed,
            return_full_text=False,
        )[0]["generated_text"]
        for key, (messages, seed) in jobs.items()
    }
    got: dict[tuple[int, int], str] = {}
    failures: list[BaseException] = []
    settings = ServeSettings(
        models=(ServedModel("text-generation", model),), max_running=CLIENTS + LEAVERS, max_queue=CLIENTS
    )
    with running_server(settings) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)

        def run_client(c: int) -> None:
            try:
                for r in range(REQUESTS):
                    messages, seed = jobs[(c, r)]
                    stream = client.chat.completions.create(
                        model=model, messages=messages, max_tokens=16, temperature=0.9, seed=seed, stream=True
                    )
                    got[(c, r)] = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            except BaseException as exc:  # collected: the assertion below shows them
                failures.append(exc)

        def run_leaver(c: int) -> None:
            try:
                stream = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": PROMPTS[c % len(PROMPTS)]}], max_tokens=200,
                    temperature=0.9, seed=c, stream=True, logit_bias={str(EOS): -100},
                )  # fmt: skip
                next(iter(stream))
                stream.close()  # closes the connection mid-stream
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=run_client, args=(c,)) for c in range(CLIENTS)]
        threads += [threading.Thread(target=run_leaver, args=(c,)) for c in range(LEAVERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert got == expected
        statuses = {
            s: live.metric(f'taskhub_requests_total{{route="/v1/chat/completions",status="{s}"}}')
            for s in ("200", "500")
        }
        assert statuses == {"200": CLIENTS * REQUESTS + LEAVERS, "500": 0}
        deadline = time.monotonic() + 10  # the server counts a stream done just after its last byte is sent
        while live.metric("taskhub_running_requests") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.metric("taskhub_running_requests") == 0
        assert live.metric(f'taskhub_time_to_first_token_seconds_count{{model="{model}"}}') == CLIENTS * REQUESTS
        assert live.metric(f'taskhub_cancelled_generations_total{{model="{model}"}}') == LEAVERS
        pipe = next(p for p in live.app.state.server.catalog.loaded() if p.model_id == model)
        engine = model_engine(pipe.model)
        assert engine is not None
        deadline = time.monotonic() + 10
        while engine.stats().blocks_used and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = engine.stats()
        assert (stats.running, stats.waiting, stats.blocks_used) == (0, 0, 0)
