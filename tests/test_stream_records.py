"""Streams of text-generation: each text delta carries its tokens' logprob records; n > 1 streams stay cancellable."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_decoding import decoding_model_dirs  # noqa: F401  (session fixture)
from taskhub_textgen.api import RequestCancelled, model_engine
from transformers import AutoTokenizer

from taskhub import pipeline, run_task

PROMPT = "The quick brown fox"


def test_stream_deltas_carry_the_records_of_their_tokens(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    path = str(decoding_model_dirs["llama"])
    controls = dict(max_new_tokens=14, do_sample=True, temperature=0.9, seed=5, logprobs=2)
    whole = run_task("text-generation", PROMPT, model=path, return_full_text=False, **controls)[0]
    stream = pipeline("text-generation", path)(PROMPT, stream=True, **controls)
    deltas = list(stream)
    assert "".join(deltas) == whole["generated_text"]
    assert all(len(d.records) >= 1 for d in deltas)  # a delta is never text without its tokens
    streamed = [r for d in deltas for r in d.records]
    rest = whole["logprobs"][len(streamed) :]  # a final EOS has no text, so no delta carries it
    assert streamed + rest == whole["logprobs"] and len(rest) <= 1
    tokenizer = AutoTokenizer.from_pretrained(path)
    for delta in deltas:  # each delta's text is its tokens' text (the decoder keeps spacing across deltas)
        assert delta.strip() == tokenizer.decode([r["token_id"] for r in delta.records]).strip()


def test_n_sequences_stream_as_one_cancellable_engine_request(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    path = str(decoding_model_dirs["llama"])
    pipe = pipeline("text-generation", path)
    controls = dict(max_new_tokens=10, do_sample=True, seed=2, num_return_sequences=3)
    expected = run_task("text-generation", PROMPT, model=path, return_full_text=False, **controls)
    stream = pipe(PROMPT, stream=True, **controls)
    assert list(stream) == [expected[0]["generated_text"]] or expected[0]["generated_text"] == ""
    assert [g.text for g in stream.result()] == [r["generated_text"] for r in expected]
    engine = model_engine(pipe.model)
    assert engine is not None
    stream = pipe(PROMPT, stream=True, max_new_tokens=200, do_sample=True, num_return_sequences=3,
                  logit_bias={2: -100.0})  # fmt: skip
    stream.cancel()
    with pytest.raises(RequestCancelled):
        stream.result()
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.blocks_used) == (0, 0, 0)
