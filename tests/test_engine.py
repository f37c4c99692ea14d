"""The generation engine against solo generate(): mixed controls, random arrival, prefix cache, tight budgets."""

from __future__ import annotations

import random

import pytest
import torch
from fixtures_decoding import EOS
from fixtures_textgen import textgen_checkpoints  # noqa: F401  (session fixture)
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.checkpoint import load_transformer
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.engine.engine import Engine
from taskhub_textgen.generate import generate
from taskhub_textgen.native_backend import NativeBackend
from transformers import AutoTokenizer

from taskhub.errors import BadInputError, ParamError

KINDS = ["gpt2", "llama", "mistral", "qwen2"]  # mistral: 8-token window on every layer; qwen2: on layer 1 only
SHARED_PREFIX = [17, 42, 99, 7, 250, 31, 64, 128, 12, 77, 200, 5, 300, 45, 61, 90]


def controls(i: int) -> dict:
    """Request i's controls: every processor, greedy and seeded sampling, stops, logprobs, several sequences."""
    sampled = dict(do_sample=True, seed=1000 + i)
    table = [
        {},
        dict(sampled),
        dict(sampled, temperature=0.7, top_k=12),
        dict(sampled, top_p=0.8),
        dict(sampled, min_p=0.1, temperature=1.3),
        dict(sampled, typical_p=0.7),
        dict(repetition_penalty=1.5),
        dict(sampled, presence_penalty=0.8, frequency_penalty=0.4),
        dict(no_repeat_ngram_size=2),
        dict(bad_words_ids=[[40], [50, 60], [70, 71, 72]]),
        dict(logit_bias={33: 5.0, 34: -100.0}),
        dict(min_new_tokens=6, eos_token_id=[EOS, 33]),
        dict(eos_token_id=[EOS], stop_token_ids=[101, 150, 202]),
        dict(stop=["e", "th"]),
        dict(sampled, logprobs=3),
        dict(sampled, num_return_sequences=3, top_k=30),
        dict(logprobs=0, repetition_penalty=1.2),
        dict(sampled, num_return_sequences=2, eos_token_id=[EOS, 20, 21, 22, 23]),
    ]
    return table[i % len(table)]


def workload(n: int, seed: int) -> list[tuple[list[int], GenerationConfig]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = [rng.randrange(4, 300) for _ in range(rng.choice([1, 3, 9, 17, 30, 45]))]
        prompt = (SHARED_PREFIX[: rng.choice([4, 9, 16])] + body) if i % 2 else body
        config = GenerationConfig(max_new_tokens=rng.randrange(1, 40), **controls(i))
        out.append((prompt, config))
    return out


def solo(model, tokenizer, prompt: list[int], config: GenerationConfig):
    batch = PromptBatch(torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long))
    return generate(NativeBackend(model), batch, config, tokenizer)[0]


def assert_same(got, expected) -> None:
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert [g.finish_reason for g in got] == [e.finish_reason for e in expected]
    assert [g.text for g in got] == [e.text for e in expected]
    for g, e in zip(got, expected):
        if e.logprobs is None:
            assert g.logprobs is None
            continue
        assert [t["token_id"] for t in g.logprobs] == [t["token_id"] for t in e.logprobs]
        assert [[a["token_id"] for a in t["top_logprobs"]] for t in g.logprobs] == [
            [a["token_id"] for a in t["top_logprobs"]] for t in e.logprobs
        ]
        assert [t["logprob"] for t in g.logprobs] == pytest.approx([t["logprob"] for t in e.logprobs], abs=1e-4)


def run_randomly(engine: Engine, requests, seed: int):
    """Submit the requests in a random order, a random number at a time between steps; their results."""
    rng = random.Random(seed)
    order = list(range(len(requests)))
    rng.shuffle(order)
    handles = {}
    while order or any(not h.done for h in handles.values()):
        for _ in range(rng.choice([0, 0, 1, 2, 5])):
            if order:
                i = order.pop()
                handles[i] = engine.submit(*requests[i])
        engine.step()
    return [handles[i].result() for i in range(len(requests))]


@pytest.fixture(scope="module")
def models(textgen_checkpoints):
    return {k: load_transformer(textgen_checkpoints[k], dtype=torch.float32) for k in KINDS}


@pytest.fixture(scope="module")
def tokenizer(textgen_checkpoints):
    return AutoTokenizer.from_pretrained(textgen_checkpoints["llama"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prefix_caching", [True, False])
def test_40_mixed_requests_equal_solo_runs(models, tokenizer, kind, prefix_caching):
    model = models[kind]
    requests = workload(40, seed=len(kind))
    expected = [solo(model, tokenizer, p, c) for p, c in requests]
    engine = Engine(
        model, tokenizer, block_size=4, max_batch_tokens=48, prefix_caching=prefix_caching, background=False
    )
    got = run_randomly(engine, requests, seed=7)
    for g, e in zip(got, expected):
        assert_same(g, e)
    stats = engine.stats()
    assert stats.running == stats.waiting == stats.blocks_used == 0
    assert (stats.prefix_hit_rate > 0) == prefix_caching


@pytest.mark.parametrize("kind", ["llama", "qwen2"])  # qwen2: two layer groups (one windowed)
def test_requests_admitted_together_share_their_prefix_blocks(models, tokenizer, kind):
    model = models[kind]
    prefix = SHARED_PREFIX[:12]  # three full 4-token blocks
    requests = [(prefix + [20 + i, 30 + i], GenerationConfig(max_new_tokens=6, **controls(i))) for i in range(5)]
    expected = [solo(model, tokenizer, p, c) for p, c in requests]
    engine = Engine(model, tokenizer, block_size=4, max_batch_tokens=200, background=False)
    handles = [engine.submit(*r) for r in requests]
    engine.step()  # all five are admitted in this one step
    stats = engine.stats()
    rows = sum(c.num_return_sequences for _, c in requests)
    # the three prefix blocks are computed once; every row has its own block for the rest (per layer group)
    assert stats.prefix_hit_rate == pytest.approx(12 * (len(requests) - 1) / (14 * len(requests)))
    assert stats.blocks_used == len(engine.windows) * (3 + rows)
    for handle, e in zip(handles, expected):
        assert_same(handle.result(), e)


@pytest.mark.parametrize("kind, blocks, batch_tokens", [("llama", 72, 64), ("mistral", 24, 16)])
def test_budget_far_below_demand_preempts_and_stays_exact(models, tokenizer, kind, blocks, batch_tokens):
    """The 16 requests need ~1,500 tokens of cache together (Mistral's window frees most of it)."""
    model = models[kind]
    requests = workload(16, seed=3)
    expected = [solo(model, tokenizer, p, c) for p, c in requests]
    budget = blocks * Engine(model, block_size=4, background=False).block_bytes
    engine = Engine(
        model, tokenizer, kv_cache_bytes=budget, block_size=4, max_batch_tokens=batch_tokens, background=False
    )
    got = run_randomly(engine, requests, seed=1)
    for g, e in zip(got, expected):
        assert_same(g, e)
    stats = engine.stats()
    assert stats.preemptions > 0
    assert 0 < stats.peak_cache_bytes <= budget


def test_sliding_window_frees_blocks_on_long_generations(models):
    """Mistral's 8-token window: a 120-token generation never holds more than the window's blocks."""
    engine = Engine(models["mistral"], block_size=4, max_batch_tokens=16, background=False)
    handle = engine.submit(list(range(5, 25)), GenerationConfig(max_new_tokens=120, eos_token_id=[]))
    peak = 0
    while not handle.done:
        engine.step()
        peak = max(peak, engine.stats().blocks_used)
    assert len(handle.result()[0].token_ids) == 120
    assert peak <= 8 // 4 + 16 // 4 + 1  # window + one prefill chunk + the block being filled


def test_streaming_equals_solo_text_and_cancel_frees_blocks(models, tokenizer):
    model = models["llama"]
    config = GenerationConfig(max_new_tokens=30, eos_token_id=[], stop=["zz"])
    prompt = tokenizer("The quick brown fox")["input_ids"]
    engine = Engine(model, tokenizer, block_size=4, background=False)
    assert "".join(engine.submit(prompt, config, stream=True)) == solo(model, tokenizer, prompt, config)[0].text
    long = GenerationConfig(max_new_tokens=200, eos_token_id=[])
    stream = engine.submit(prompt, long, stream=True)
    other = engine.submit(prompt, GenerationConfig(max_new_tokens=5, eos_token_id=[]))
    next(stream)
    assert engine.stats().blocks_used > 0
    stream.close()  # abandoning the iterator cancels the request
    assert (
        other.result()[0].token_ids
        == solo(model, tokenizer, prompt, GenerationConfig(max_new_tokens=5, eos_token_id=[]))[0].token_ids
    )
    engine.step()
    assert engine.stats().blocks_used == 0
    assert engine.stats().running == engine.stats().waiting == 0


def test_streaming_n_sequences_equals_solo_texts(models, tokenizer):
    model = models["llama"]
    prompt = tokenizer("The quick brown fox")["input_ids"]
    config = GenerationConfig(
        max_new_tokens=30, do_sample=True, seed=3, num_return_sequences=3, stop=["e "], eos_token_id=[EOS, 20, 21, 22]
    )
    expected = solo(model, tokenizer, prompt, config)
    engine = Engine(model, tokenizer, block_size=4, background=False)
    handle = engine.submit(prompt, config, stream=True)
    with pytest.raises(ValueError):
        next(handle)  # several sequences: text deltas alone would not say whose they are
    items = list(handle.indexed())
    texts = [[d for i, d in items if i == row and isinstance(d, str)] for row in range(3)]
    assert ["".join(t) for t in texts] == [e.text for e in expected]
    assert len({e.finish_reason for e in expected}) == 2  # rows end at different steps ("length" and "eos")
    ends = {i: n for n, (i, item) in enumerate(items) if not isinstance(item, str)}
    assert sorted(ends) == [0, 1, 2] and all(items[n][1].token_ids == expected[i].token_ids for i, n in ends.items())
    for i, n in ends.items():  # each row's Generation follows its last delta, and comes as soon as that row ends
        assert all(j != i for j, _ in items[n + 1 :])
    early = next(i for i, e in enumerate(expected) if e.finish_reason == "eos")
    assert ends[early] < max(n for n, (i, d) in enumerate(items) if isinstance(d, str))  # others still streaming
    assert_same(handle.result(), expected)
    assert engine.stats().blocks_used == 0


def test_background_engine_serves_threads(models, tokenizer):
    import threading

    model = models["qwen2"]
    requests = workload(12, seed=5)
    expected = [solo(model, tokenizer, p, c) for p, c in requests]
    engine = Engine(model, tokenizer, block_size=4)
    results: dict[int, list] = {}

    def worker(k: int) -> None:
        for i in range(k, len(requests), 4):
            results[i] = engine.submit(*requests[i]).result()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    for i, e in enumerate(expected):
        assert_same(results[i], e)
    assert all(
        r[0].metrics["queue_s"] >= 0 and r[0].metrics["ttft_s"] >= r[0].metrics["queue_s"] for r in results.values()
    )


def test_requests_the_engine_cannot_serve_are_refused(models):
    engine = Engine(models["llama"], kv_cache_bytes=10_000, block_size=4, background=False)
    with pytest.raises(ParamError, match="num_beams"):
        engine.submit([5, 6], GenerationConfig(num_beams=2))
    with pytest.raises(ParamError, match="KV blocks"):
        engine.submit([5] * 50, GenerationConfig(max_new_tokens=200))
    with pytest.raises(ParamError, match="bad_words_ids"):
        engine.submit([5, 6], GenerationConfig(max_new_tokens=4, bad_words_ids=[[10_000]]))
    with pytest.raises(BadInputError, match="tokenizer"):
        engine.submit("text without a tokenizer", GenerationConfig(max_new_tokens=4))
    assert engine.stats().waiting == 0


def test_requests_with_different_output_formats_share_steps_and_equal_solo_runs(models, tokenizer):
    """Structured output per request in the engine: a JSON schema, a regex, choices and a plain request
    run in the same steps, each token-identical to its solo static run and each output valid."""
    import json
    import re

    import jsonschema

    model = models["llama"]
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    formats = [
        {"response_format": {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}},
        {"regex": r"[a-c]{3}-[0-9]{2}"},
        {"choices": ["positive", "negative"]},
        {},
    ]
    configs = [GenerationConfig(max_new_tokens=40, eos_token_id=[EOS], **fmt) for fmt in formats]
    prompts = [tokenizer(text)["input_ids"] for text in ("Give a number:", "Code:", "Mood:", "Once upon")]
    engine = Engine(model, tokenizer, block_size=4, background=False)
    handles = [engine.submit(p, c) for p, c in zip(prompts, configs)]
    got = [h.result()[0] for h in handles]
    assert engine.stats().steps < sum(len(g.token_ids) for g in got)  # the requests shared steps
    for prompt, config, generation in zip(prompts, configs, got):
        assert generation.token_ids == solo(model, tokenizer, prompt, config)[0].token_ids
    assert [g.finish_reason for g in got[:3]] == ["eos", "eos", "eos"], [g.text for g in got]
    jsonschema.validate(json.loads(got[0].text), schema)
    assert re.fullmatch(r"[a-c]{3}-[0-9]{2}", got[1].text)
    assert got[2].text in ("positive", "negative")
