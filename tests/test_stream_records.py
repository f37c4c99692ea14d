"""Streams of text-generation: each text delta carries its tokens' logprob records; n > 1 streams stay cancellable."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_decoding import decoding_model_dirs  # noqa: F401  (session fixture)
from taskhub_textgen.api import Engine, RequestCancelled, SequenceStreams, model_engine
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


def test_n_sequences_stream_each_token_by_token(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    path = str(decoding_model_dirs["llama"])
    pipe = pipeline("text-generation", path)
    controls = dict(max_new_tokens=12, do_sample=True, temperature=1.2, seed=2, num_return_sequences=3, logprobs=1)
    expected = run_task("text-generation", PROMPT, model=path, return_full_text=False, return_metrics=True, **controls)
    streams = pipe(PROMPT, stream=True, **controls)
    assert len(streams) == 3
    items = list(streams.events())
    pairs = [(i, d) for i, d in items if isinstance(d, str)]
    assert {i for i, _ in pairs} == {0, 1, 2}  # every sequence streams, not only the first
    finished = [(i, g.text) for i, g in items if not isinstance(g, str)]
    assert sorted(finished) == [(i, r["generated_text"]) for i, r in enumerate(expected)]  # one Generation each
    for i, record in enumerate(expected):
        deltas = [d for j, d in pairs if j == i]
        assert "".join(deltas) == record["generated_text"]
        assert len(deltas) > 1  # token by token, not whole at the end
        streamed = [r for d in deltas for r in d.records]
        rest = record["logprobs"][len(streamed) :]  # a final EOS has no text, so no delta carries it
        assert streamed + rest == record["logprobs"] and len(rest) <= 1
    assert [g.text for g in streams.result()] == [r["generated_text"] for r in expected]
    assert [s.generation.finish_reason for s in streams] == [r["finish_reason"] for r in expected]


def test_each_sequence_iterates_its_own_deltas(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    path = str(decoding_model_dirs["gpt2"])
    controls = dict(max_new_tokens=10, do_sample=True, seed=4, num_return_sequences=2)
    expected = run_task("text-generation", PROMPT, model=path, return_full_text=False, **controls)
    streams = pipeline("text-generation", path)(PROMPT, stream=True, **controls)
    assert streams[1].generation is None  # still decoding
    assert "".join(streams[1]) == expected[1]["generated_text"]  # reading the second queues the first's deltas
    assert "".join(streams[0]) == expected[0]["generated_text"]
    assert [s.generation.text for s in streams] == [r["generated_text"] for r in expected]


def long_sampled_streams(dirs: dict[str, Path], n: int) -> tuple[Engine, SequenceStreams]:
    """The llama fixture's engine and its n-sequence stream of a 200-token sampled request (EOS banned)."""
    pipe = pipeline("text-generation", str(dirs["llama"]))
    engine = model_engine(pipe.model)
    assert engine is not None
    streams = pipe(PROMPT, stream=True, max_new_tokens=200, do_sample=True, num_return_sequences=n,
                   logit_bias={2: -100.0})  # fmt: skip
    return engine, streams


def test_n_sequence_stream_cancels_all_rows(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    engine, streams = long_sampled_streams(decoding_model_dirs, n=3)
    pairs = streams.events()
    assert next(pairs)[1]  # decoding has started
    assert engine.stats().blocks_used >= 3
    streams.cancel()
    with pytest.raises(RequestCancelled):
        list(pairs)
    with pytest.raises(RequestCancelled):
        streams.result()
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.blocks_used) == (0, 0, 0)


def test_abandoned_n_sequence_stream_frees_its_rows(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    engine, streams = long_sampled_streams(decoding_model_dirs, n=2)
    pairs = streams.events()
    next(pairs)
    pairs.close()  # the reader stops early: the request is cancelled
    with pytest.raises(RequestCancelled):
        streams.result()
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.blocks_used) == (0, 0, 0)


def test_n_sequences_stream_on_the_static_path_too(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    path = str(decoding_model_dirs["neox"])  # a transformers-backed model: static batches, no engine
    pipe = pipeline("text-generation", path)
    assert model_engine(pipe.model) is None
    controls = dict(max_new_tokens=10, do_sample=True, seed=8, num_return_sequences=2)
    for prompt in (PROMPT, "A stop"):
        records = run_task("text-generation", prompt, model=path, return_full_text=False, **controls)
        streams = pipe(prompt, stream=True, **controls)
        items = list(streams.events())
        for i, record in enumerate(records):
            deltas = [d for j, d in items if j == i and isinstance(d, str)]
            assert "".join(deltas) == record["generated_text"] and len(deltas) > 1
            assert [g.text for j, g in items if j == i and not isinstance(g, str)] == [record["generated_text"]]
        assert [s.generation.text for s in streams] == [r["generated_text"] for r in records]
    prompts = [PROMPT, "A stop"]  # one static batch: each prompt's group of sequences reads from it
    together = run_task("text-generation", prompts, model=path, return_full_text=False, **controls)
    groups = pipe(prompts, stream=True, **controls)
    assert [["".join(s) for s in streams] for streams in groups] == [
        [r["generated_text"] for r in records] for records in together
    ]


def test_n_beams_stream_whole_per_sequence(decoding_model_dirs: dict[str, Path]) -> None:  # noqa: F811
    path = str(decoding_model_dirs["llama"])
    controls = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2)
    expected = run_task("text-generation", PROMPT, model=path, return_full_text=False, **controls)
    streams = pipeline("text-generation", path)(PROMPT, stream=True, **controls)
    assert ["".join(s) for s in streams] == [r["generated_text"] for r in expected]  # beam search: whole, at the end
    assert [g.text for g in streams.result()] == [r["generated_text"] for r in expected]
