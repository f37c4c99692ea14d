"""Hostile generation params end as ParamError / BadInputError naming the field and what is allowed (run_task)."""

from __future__ import annotations

import math

import pytest
from fixtures_decoding import EOS, PAD, decoding_model_dirs  # noqa: F401  (session fixture)
from transformers import AutoModelForCausalLM, AutoTokenizer

from taskhub import run_task
from taskhub.errors import BadInputError, ParamError

VOCAB = 400  # the fixtures' tokenizer and models
GPT2_POSITIONS = 256  # n_positions of the fixtures' GPT-2


def generate(dirs, model="llama", prompt="The quick brown fox", **params):
    return run_task(
        "text-generation", prompt, model=str(dirs[model]), max_new_tokens=params.pop("max_new_tokens", 4), **params
    )


@pytest.mark.parametrize(
    "params, field",
    [
        ({"logit_bias": {VOCAB: 1.0}}, "logit_bias"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias"),
        ({"bad_words_ids": [[5, VOCAB + 7]]}, "bad_words_ids"),
        ({"suppress_tokens": [-3]}, "suppress_tokens"),
        ({"begin_suppress_tokens": [10**9]}, "begin_suppress_tokens"),
        ({"forced_bos_token_id": VOCAB}, "forced_bos_token_id"),
        ({"forced_eos_token_id": -2}, "forced_eos_token_id"),
        ({"stop_token_ids": [3, VOCAB]}, "stop_token_ids"),
        ({"eos_token_id": [VOCAB + 1]}, "eos_token_id"),
        ({"eos_token_id": -5}, "eos_token_id"),
        ({"pad_token_id": 10**9}, "pad_token_id"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_refused(decoding_model_dirs, params, field):
    with pytest.raises(ParamError, match=field) as err:
        generate(decoding_model_dirs, **params)
    assert "0.." in str(err.value) or ">= 0" in str(err.value)  # says what is allowed


def test_the_last_vocabulary_id_is_accepted(decoding_model_dirs):
    out = generate(decoding_model_dirs, logit_bias={VOCAB - 1: 100.0}, return_full_text=False)
    tokenizer = AutoTokenizer.from_pretrained(decoding_model_dirs["llama"])
    assert out[0]["generated_text"] == tokenizer.decode([VOCAB - 1] * 4)  # the bias really reached the logits


@pytest.mark.parametrize(
    "params, field",
    [
        ({"repetition_penalty": math.nan}, "repetition_penalty"),
        ({"presence_penalty": math.inf}, "presence_penalty"),
        ({"frequency_penalty": -math.inf}, "frequency_penalty"),
        ({"logit_bias": {5: math.nan}}, "logit_bias"),
        ({"temperature": math.inf, "do_sample": True}, "temperature"),
        ({"length_penalty": math.nan, "num_beams": 2}, "length_penalty"),
    ],
)
def test_non_finite_floats_are_refused(decoding_model_dirs, params, field):
    with pytest.raises(ParamError, match=field):
        generate(decoding_model_dirs, **params)


@pytest.mark.parametrize(
    "params, field, limit",
    [
        ({"length_penalty": 1e30, "num_beams": 2}, "length_penalty", "10"),  # was an OverflowError
        ({"logit_bias": {5: 1e308}}, "logit_bias", "100"),
        ({"presence_penalty": 1e308}, "presence_penalty", "2"),
        ({"frequency_penalty": -3.0}, "frequency_penalty", "-2"),
    ],
)
def test_extreme_finite_floats_are_refused_with_the_range(decoding_model_dirs, params, field, limit):
    with pytest.raises(ParamError, match=field) as err:
        generate(decoding_model_dirs, **params)
    assert limit in str(err.value)


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_seed_outside_int64_is_refused(decoding_model_dirs, seed):
    with pytest.raises(ParamError, match="seed"):
        generate(decoding_model_dirs, do_sample=True, seed=seed)


def test_largest_seed_runs(decoding_model_dirs):
    a = generate(decoding_model_dirs, do_sample=True, seed=2**63 - 1)
    assert a == generate(decoding_model_dirs, do_sample=True, seed=2**63 - 1)


@pytest.mark.parametrize(
    "params, field, limit",
    [
        ({"logprobs": 21}, "logprobs", "20"),
        ({"num_beams": 65}, "num_beams", "64"),
        ({"num_return_sequences": 1000, "do_sample": True}, "num_return_sequences", "64"),
        ({"max_new_tokens": 10**7}, "max_new_tokens", str(1 << 20)),
    ],
)
def test_counts_are_bounded_with_the_limit_named(decoding_model_dirs, params, field, limit):
    with pytest.raises(ParamError, match=field) as err:
        generate(decoding_model_dirs, **params)
    assert limit in str(err.value)


def test_max_new_tokens_beyond_the_context_is_refused(decoding_model_dirs):
    with pytest.raises(ParamError, match="n_positions") as err:
        generate(decoding_model_dirs, model="gpt2", max_new_tokens=GPT2_POSITIONS)
    assert f"max_new_tokens <= {GPT2_POSITIONS - 1}" in str(err.value)


def test_a_100k_character_prompt_is_refused_before_decoding(decoding_model_dirs):
    with pytest.raises(BadInputError, match="n_positions") as err:
        generate(decoding_model_dirs, model="gpt2", prompt="word " * 20_000)
    assert "truncation" in str(err.value) and "Input 0" in str(err.value)


def test_llama_prompt_beyond_max_position_embeddings_is_refused(decoding_model_dirs):
    with pytest.raises(BadInputError, match="max_position_embeddings"):
        generate(decoding_model_dirs, prompt="word " * 300, max_new_tokens=8)


def test_truncation_left_keeps_the_end_of_the_prompt(decoding_model_dirs):
    """Same tokens as transformers' generate() on the last 256 - max_new_tokens prompt tokens."""
    path = decoding_model_dirs["gpt2"]
    prompt = " ".join(f"The quick brown fox {i}" for i in range(60))
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > GPT2_POSITIONS
    new = 8
    kept = ids[:, -(GPT2_POSITIONS - new) :]
    ref = AutoModelForCausalLM.from_pretrained(path).generate(
        input_ids=kept, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=PAD, eos_token_id=EOS
    )
    got = generate(
        decoding_model_dirs, model="gpt2", prompt=prompt, max_new_tokens=new, truncation="left", return_full_text=False
    )
    assert got[0]["generated_text"] == tokenizer.decode(ref[0, kept.shape[1] :])


def test_unknown_truncation_value_is_refused(decoding_model_dirs):
    with pytest.raises(ParamError, match="truncation"):
        generate(decoding_model_dirs, truncation="middle")


def test_bart_decoder_positions_bound_max_new_tokens(decoding_model_dirs):
    with pytest.raises(ParamError, match="max_position_embeddings"):
        run_task("text2text-generation", "A source text.", model=str(decoding_model_dirs["bart"]), max_new_tokens=300)


def test_requests_beyond_the_memory_budget_are_refused(decoding_model_dirs, monkeypatch):
    monkeypatch.setenv("TASKHUB_MAX_GENERATION_BYTES", str(1 << 20))
    generate(decoding_model_dirs, max_new_tokens=4)  # a few KiB: runs
    with pytest.raises(ParamError, match="TASKHUB_MAX_GENERATION_BYTES") as err:
        generate(decoding_model_dirs, max_new_tokens=200, num_beams=64)
    assert "num_beams" in str(err.value)


def test_an_empty_list_is_no_inputs_and_its_params_are_still_checked(decoding_model_dirs):
    model = str(decoding_model_dirs["gpt2"])
    assert run_task("text-generation", [], model=model, max_new_tokens=4) == []
    with pytest.raises(ParamError, match="seed"):
        run_task("text-generation", [], model=model, seed=-1)


@pytest.mark.slow
def test_a_source_for_a_model_stating_no_length_stops_at_4096_tokens(decoding_model_dirs):
    """T5 (relative positions) states no input length; a 100k-character source once asked for ~29 GB of attention."""
    model = str(decoding_model_dirs["t5"])
    tokenizer = AutoTokenizer.from_pretrained(model)
    source = "word " * 20_000
    assert len(tokenizer(source)["input_ids"]) > 4096
    first = tokenizer(source, truncation=True, max_length=4096)["input_ids"]
    kept = tokenizer.decode(first, skip_special_tokens=True)
    assert tokenizer(kept)["input_ids"] == first  # `kept` is exactly the first 4096 tokens
    assert run_task("text2text-generation", source, model=model, max_new_tokens=4) == run_task(
        "text2text-generation", kept, model=model, max_new_tokens=4
    )
