"""generate() over transformers models vs model.generate(): greedy, sampling, beams, stops, streaming."""

from __future__ import annotations

import itertools

import pytest
import torch
from fixtures_decoding import EOS, PAD, decoding_model_dirs, decoding_models  # noqa: F401
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.generate import generate, stream
from taskhub_textgen.hf_backend import HFBackend

PROMPTS = ["The quick brown", "A stop string may straddle two tokens", "Hi"]
SOURCES = ["Café crème brûlée is a dessert.", "Translate English to German: the house", "Summaries"]


def causal_batch(tokenizer, prompts=PROMPTS):
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    return dict(enc), PromptBatch(enc["input_ids"], enc["attention_mask"])


def seq2seq_batch(model, tokenizer, sources=SOURCES):
    enc = tokenizer(sources, return_tensors="pt", padding=True, padding_side="right")
    start = torch.full((len(sources), 1), model.generation_config.decoder_start_token_id)
    return dict(enc), PromptBatch(start, torch.ones_like(start), dict(enc))


def make_batch(name, decoding_models):
    model, tokenizer = decoding_models[name]
    if model.config.is_encoder_decoder:
        enc, batch = seq2seq_batch(model, tokenizer)
    else:
        enc, batch = causal_batch(tokenizer)
    return model, tokenizer, enc, batch


def hf_new_tokens(model, enc, out_ids, row, eos=EOS):
    """Generated part of transformers' output row, through its first `eos` (the padding after it removed).

    transformers pads a row that ended early; a row without `eos` ran to max_new_tokens, unpadded."""
    start = 1 if model.config.is_encoder_decoder else enc["input_ids"].shape[1]
    ids = out_ids[row, start:].tolist()
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def ours(model, batch, tokenizer=None, **kwargs):
    kwargs.setdefault("eos_token_id", EOS)
    kwargs.setdefault("pad_token_id", PAD)
    return generate(HFBackend(model), batch, GenerationConfig(**kwargs), tokenizer)


def first_token_at(model, batch, step):
    """A token the model generates greedily at `step` of row 0 (to serve as EOS)."""
    return ours(model, batch, max_new_tokens=step + 1, eos_token_id=[])[0][0].token_ids[step]


@pytest.mark.parametrize("name", ["gpt2", "llama", "bart", "t5"])
def test_greedy_matches_transformers_64_tokens(decoding_models, name):
    model, _, enc, batch = make_batch(name, decoding_models)
    eos = first_token_at(model, batch, 20)  # some rows end early, others run to the limit
    ref = model.generate(**enc, max_new_tokens=64, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
    got = ours(model, batch, max_new_tokens=64, eos_token_id=eos)
    for row, (gen,) in enumerate(got):
        assert gen.token_ids == hf_new_tokens(model, enc, ref, row, eos)
        assert gen.finish_reason == ("eos" if gen.token_ids[-1] == eos else "length")
        assert len(gen.token_ids) == 64 or gen.finish_reason == "eos"
    assert any(g.finish_reason == "eos" for (g,) in got)
    assert any(g.finish_reason == "length" for (g,) in got)


def beam_cases():
    grid = itertools.product([2, 3, 4], [1.0, 2.0, -0.5], [False, True, "never"])
    for i, (beams, penalty, early) in enumerate(grid):
        yield beams, penalty, early, 1 + i % beams


@pytest.mark.parametrize("name", ["gpt2", "bart"])
@pytest.mark.parametrize("beams, penalty, early, returned", list(beam_cases()))
def test_beam_search_matches_transformers(decoding_models, name, beams, penalty, early, returned):
    model, _, enc, batch = make_batch(name, decoding_models)
    eos = first_token_at(model, batch, 3)  # beams hit EOS early, so the stopping rules matter
    kwargs = dict(num_beams=beams, length_penalty=penalty, early_stopping=early, num_return_sequences=returned)
    ref = model.generate(
        **enc,
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        **kwargs,
    )
    got = [g for gens in ours(model, batch, max_new_tokens=10, eos_token_id=eos, **kwargs) for g in gens]
    assert len(got) == len(PROMPTS) * returned
    start = 1 if model.config.is_encoder_decoder else enc["input_ids"].shape[1]
    for row, gen in enumerate(got):
        length = int((ref.beam_indices[row] >= 0).sum())
        assert gen.token_ids == ref.sequences[row, start : start + length].tolist()
        assert gen.score == pytest.approx(ref.sequences_scores[row].item(), abs=1e-5)


def test_beam_search_t5(decoding_models):
    model, _, enc, batch = make_batch("t5", decoding_models)
    ref = model.generate(
        **enc, max_new_tokens=8, num_beams=3, num_return_sequences=2, pad_token_id=PAD, eos_token_id=EOS
    )
    got = [g for gens in ours(model, batch, max_new_tokens=8, num_beams=3, num_return_sequences=2) for g in gens]
    for row, gen in enumerate(got):
        assert gen.token_ids == hf_new_tokens(model, enc, ref, row)


@pytest.mark.parametrize(
    "controls",
    [
        dict(top_k=5),
        dict(top_k=0, top_p=0.8, temperature=0.7),
        dict(top_k=0, min_p=0.1, repetition_penalty=1.3),
        dict(top_k=0, typical_p=0.9, no_repeat_ngram_size=2),
    ],
)
def test_sampling_matches_transformers_with_global_seed(decoding_models, controls):
    """Without a per-request seed both draw from torch's global generator in the same order."""
    model, _, enc, batch = make_batch("llama", decoding_models)
    torch.manual_seed(123)
    ref = model.generate(**enc, max_new_tokens=24, do_sample=True, eos_token_id=EOS, pad_token_id=PAD, **controls)
    torch.manual_seed(123)
    got = ours(model, batch, max_new_tokens=24, do_sample=True, **controls)
    for row, (gen,) in enumerate(got):
        assert gen.token_ids == hf_new_tokens(model, enc, ref, row)


def test_seed_reproducible_and_distinct(decoding_models):
    model, _, _, batch = make_batch("gpt2", decoding_models)

    def run(seed):
        return [g.token_ids for (g,) in ours(model, batch, max_new_tokens=16, do_sample=True, seed=seed)]

    torch.manual_seed(0)
    first = run(7)
    torch.manual_seed(1)  # the global generator does not matter
    assert run(7) == first
    assert run(8) != first


def test_sampling_top_k_1_is_greedy(decoding_models):
    model, _, _, batch = make_batch("llama", decoding_models)
    greedy = [g.token_ids for (g,) in ours(model, batch, max_new_tokens=32)]
    sampled = [g.token_ids for (g,) in ours(model, batch, max_new_tokens=32, do_sample=True, top_k=1, seed=3)]
    assert sampled == greedy


def test_num_return_sequences_with_sampling(decoding_models):
    model, _, _, batch = make_batch("gpt2", decoding_models)
    got = ours(model, batch, max_new_tokens=12, do_sample=True, num_return_sequences=3, seed=0)
    assert [len(g) for g in got] == [3, 3, 3]
    assert len({tuple(g.token_ids) for g in got[0]}) > 1


def test_min_new_tokens_matches_transformers(decoding_models):
    model, _, enc, batch = make_batch("gpt2", decoding_models)
    eos = first_token_at(model, batch, 2)
    ref = model.generate(**enc, max_new_tokens=30, min_new_tokens=12, eos_token_id=eos, pad_token_id=PAD)
    got = ours(model, batch, max_new_tokens=30, min_new_tokens=12, eos_token_id=eos)
    for row, (gen,) in enumerate(got):
        assert eos not in gen.token_ids[:12]
        assert gen.token_ids == hf_new_tokens(model, enc, ref, row, eos)
    assert ours(model, batch, max_new_tokens=30, eos_token_id=eos)[0][0].token_ids[-1] == eos


def test_logprobs_are_log_softmax_of_processed_scores(decoding_models):
    model, _, enc, batch = make_batch("llama", decoding_models)
    ref = model.generate(
        **enc,
        max_new_tokens=6,
        repetition_penalty=1.5,
        eos_token_id=EOS,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_scores=True,
    )
    got = ours(model, batch, max_new_tokens=6, repetition_penalty=1.5, logprobs=3)
    for row, (gen,) in enumerate(got):
        for step, entry in enumerate(gen.logprobs):
            expected = torch.log_softmax(ref.scores[step][row], dim=-1)
            assert entry["logprob"] == pytest.approx(expected[entry["token_id"]].item(), abs=1e-5)
            values, ids = expected.topk(3)
            assert [t["token_id"] for t in entry["top_logprobs"]] == ids.tolist()
            assert [t["logprob"] for t in entry["top_logprobs"]] == pytest.approx(values.tolist(), abs=1e-5)


def boundary_stop(tokenizer, ids):
    """(stop string spanning tokens i and i+1, i, char offset of the boundary) found first at that boundary."""
    text = tokenizer.decode(ids)
    for i in range(1, len(ids) - 1):
        head = tokenizer.decode(ids[: i + 1])
        tail = tokenizer.decode(ids[i + 1 : i + 2])
        if "\ufffd" in head + tail or not text.startswith(head) or not head or not tail:
            continue
        stop = head[-1] + tail[0]
        if text.find(stop) == len(head) - 1:
            return stop, i, len(head)
    raise AssertionError("no boundary-spanning stop string in this output")


@pytest.mark.parametrize("include_stop", [False, True])
def test_stop_string_across_token_boundary(decoding_models, include_stop):
    model, tokenizer, _, batch = make_batch("gpt2", decoding_models)
    plain = ours(model, batch, tokenizer, max_new_tokens=40, eos_token_id=[])[1][0]
    stop, i, offset = boundary_stop(tokenizer, plain.token_ids)
    got = ours(model, batch, tokenizer, max_new_tokens=40, eos_token_id=[], stop=[stop], include_stop=include_stop)[1][
        0
    ]
    assert got.finish_reason == "stop"
    assert got.token_ids == plain.token_ids[: i + 2]
    full = tokenizer.decode(plain.token_ids)
    assert got.text == (full[: offset + 1] if include_stop else full[: offset - 1])


def test_stop_token_ids_and_finish_reasons(decoding_models):
    model, tokenizer, _, batch = make_batch("gpt2", decoding_models)
    plain = ours(model, batch, tokenizer, max_new_tokens=20, eos_token_id=[])
    stop_id = plain[0][0].token_ids[4]
    got = ours(model, batch, tokenizer, max_new_tokens=20, eos_token_id=[], stop_token_ids=[stop_id])
    first = got[0][0]
    assert first.finish_reason == "stop" and first.token_ids[-1] == stop_id
    assert first.text == tokenizer.decode(first.token_ids[:-1])
    kept = ours(
        model, batch, tokenizer, max_new_tokens=20, eos_token_id=[], stop_token_ids=[stop_id], include_stop=True
    )
    assert kept[0][0].text == tokenizer.decode(first.token_ids)
    for (gen,), (ref,) in zip(got, plain):
        if stop_id not in ref.token_ids:
            assert gen.finish_reason == "length" and gen.token_ids == ref.token_ids


@pytest.mark.parametrize("name", ["gpt2", "bart"])
def test_stream_deltas_are_final_and_join_to_text(decoding_models, name):
    model, tokenizer, _, batch = make_batch(name, decoding_models)
    plain = ours(model, batch, tokenizer, max_new_tokens=40, eos_token_id=[])
    stop, _, _ = boundary_stop(tokenizer, plain[1][0].token_ids) if name == "gpt2" else ("\x00", 0, 0)
    config = dict(max_new_tokens=40, eos_token_id=[], pad_token_id=PAD, stop=[stop])
    final = [g for (g,) in generate(HFBackend(model), batch, GenerationConfig(**config), tokenizer)]
    rows = stream(HFBackend(model), batch, GenerationConfig(**config), tokenizer)
    streamed = ["" for _ in final]
    for row in (1, 0, 2, 1, 0, 2) * 50:  # rows read in turns share one decode loop
        delta = next(rows[row], "")
        streamed[row] += delta
        assert final[row].text.startswith(streamed[row])  # nothing emitted is ever taken back
    assert all(next(r, None) is None for r in rows)
    assert streamed == [g.text for g in final]
    assert [r.generation.token_ids for r in rows] == [g.token_ids for g in final]
    assert [r.generation.finish_reason for r in rows] == [g.finish_reason for g in final]


def test_metrics_present_and_sane(decoding_models):
    model, _, _, batch = make_batch("gpt2", decoding_models)
    for (gen,) in ours(model, batch, max_new_tokens=8, eos_token_id=[]):
        m = gen.metrics
        assert set(m) == {
            "prompt_tokens",
            "generated_tokens",
            "ttft_s",
            "tpot_s",
            "tokens_per_s",
            "peak_memory_bytes",
            "finish_reason",
        }
        assert m["generated_tokens"] == 8 and m["finish_reason"] == "length"
        assert 0 < m["ttft_s"] and 0 < m["tpot_s"] and m["tokens_per_s"] > 0 and m["peak_memory_bytes"] > 0
    assert [g.metrics["prompt_tokens"] for (g,) in ours(model, batch, max_new_tokens=1)] == batch.attention_mask.sum(
        1
    ).tolist()


def test_beam_search_stops_at_stop_strings(decoding_models):
    model, tokenizer, _, batch = make_batch("gpt2", decoding_models)
    plain = ours(model, batch, tokenizer, max_new_tokens=16, num_beams=3, eos_token_id=[])[1][0]
    stop, _, _ = boundary_stop(tokenizer, plain.token_ids)
    got = [
        g
        for gens in ours(
            model,
            batch,
            tokenizer,
            max_new_tokens=16,
            num_beams=3,
            num_return_sequences=2,
            eos_token_id=[],
            stop=[stop],
        )
        for g in gens
    ]
    assert any(g.finish_reason == "stop" for g in got)
    for gen in got:
        full = tokenizer.decode(gen.token_ids)
        assert stop not in gen.text and full.startswith(gen.text)
        if gen.finish_reason == "stop":  # the stop string completes in the last token, not before
            assert stop in full and stop not in tokenizer.decode(gen.token_ids[:-1])
            assert gen.text == full[: full.find(stop)]
