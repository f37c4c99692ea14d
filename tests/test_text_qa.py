"""question-answering follows transformers v4's extractive algorithm, checked against a plain re-derivation.

transformers v5 has no question-answering pipeline, so the reference here runs the model by hand on each
span (one at a time, unpadded) and scores every (start, end) pair with loops.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures_text import CORPUS, text_models  # noqa: F401
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import taskhub

SHORT = {"question": "Where does Wolfgang live?", "context": "My name is Wolfgang and I live in Berlin with my cat."}
LONG = {"question": "Where was Barack Obama born?", "context": " ".join(CORPUS)}


def softmax_over(logits: list[float], allowed: list[int]) -> dict[int, float]:
    top = max(logits[i] for i in allowed)
    exp = {i: math.exp(logits[i] - top) for i in allowed}
    total = sum(exp.values())
    return {i: v / total for i, v in exp.items()}


def reference(
    path: Path,
    question: str,
    context: str,
    top_k: int = 1,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    max_seq_len: int = 64,
    doc_stride: int = 32,
) -> tuple[Any, int]:
    """(answer or answers, number of spans) by transformers v4's rules, written out plainly."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    enc = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    answers: list[dict[str, Any]] = []
    null_score = 1000000.0
    for span, ids in enumerate(enc["input_ids"]):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([enc["token_type_ids"][span]]))
        allowed = [i for i, s in enumerate(enc.sequence_ids(span)) if s == 1 or ids[i] == tokenizer.cls_token_id]
        p_start = softmax_over(out.start_logits[0].tolist(), allowed)
        p_end = softmax_over(out.end_logits[0].tolist(), allowed)
        null_score = min(null_score, p_start[0] * p_end[0])
        context_tokens = [i for i in allowed if i != 0]
        pairs = [
            (p_start[s] * p_end[e], s, e) for s in context_tokens for e in context_tokens if s <= e < s + max_answer_len
        ]
        pairs.sort(key=lambda p: -p[0])
        encoding = enc.encodings[span]
        for score, s, e in pairs[: top_k * 2 + 10]:
            start = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=1)[0]
            end = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=1)[1]
            same = [a for a in answers if a["answer"].lower() == context[start:end].lower()]
            if same:
                same[0]["score"] += score
            else:
                answers.append({"score": score, "start": start, "end": end, "answer": context[start:end]})
    if handle_impossible_answer:
        answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda a: -a["score"])[:top_k]
    return (answers[0] if len(answers) == 1 else answers), len(enc["input_ids"])


def assert_answers(ours: Any, expected: Any) -> None:
    ours, expected = (ours, expected) if isinstance(expected, list) else ([ours], [expected])
    assert [(a["answer"], a["start"], a["end"]) for a in ours] == [
        (a["answer"], a["start"], a["end"]) for a in expected
    ]
    assert [a["score"] for a in ours] == pytest.approx([a["score"] for a in expected], abs=1e-5)


@pytest.mark.parametrize("top_k", [1, 3])
def test_short_context_matches_reference(text_models: dict[str, Path], top_k: int) -> None:
    ours = taskhub.run_task("question-answering", SHORT, model=str(text_models["qa"]), top_k=top_k)
    expected, spans = reference(text_models["qa"], **SHORT, top_k=top_k)
    assert spans == 1
    assert_answers(ours, expected)
    for answer in ours if isinstance(ours, list) else [ours]:
        assert SHORT["context"][answer["start"] : answer["end"]] == answer["answer"]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"top_k": 4, "max_answer_len": 4}, {"top_k": 2, "handle_impossible_answer": True}],
)
def test_long_context_is_split_with_stride_like_reference(text_models: dict[str, Path], kwargs: dict[str, Any]) -> None:
    ours = taskhub.run_task("question-answering", LONG, model=str(text_models["qa"]), **kwargs)
    expected, spans = reference(text_models["qa"], **LONG, **kwargs)
    assert spans >= 4  # the context is several times the 64-token span
    assert_answers(ours, expected)


def test_explicit_span_sizes_match_reference(text_models: dict[str, Path]) -> None:
    ours = taskhub.run_task(
        "question-answering", LONG, model=str(text_models["qa"]), max_seq_len=48, doc_stride=8, top_k=2
    )
    expected, spans = reference(text_models["qa"], **LONG, max_seq_len=48, doc_stride=8, top_k=2)
    assert spans >= 6
    assert_answers(ours, expected)


def test_batch_of_questions_equals_one_at_a_time(text_models: dict[str, Path]) -> None:
    pipe = taskhub.pipeline("question-answering", model=str(text_models["qa"]))
    inputs = [SHORT, LONG, {"question": "Who won?", "context": CORPUS[13]}]
    together = pipe(inputs, batch_size=3)
    for item, answer in zip(inputs, together):
        assert_answers(answer, pipe(item))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"question": "Where?"}, "'context'"),
        ({"context": "Berlin."}, "'question'"),
        ({"question": None, "context": "Berlin."}, "'question' is None"),
        ({"question": "Where?", "context": ""}, "'context' is empty"),
        ({"question": "Where?", "context": 42}, "'context' is an int"),
        ({"question": "Where?", "context": "Berlin.", "answer": "x"}, "unknown fields"),
        ("Where is Berlin?", "expected a mapping"),
    ],
)
def test_bad_question_inputs_name_the_problem(text_models: dict[str, Path], item: Any, message: str) -> None:
    with pytest.raises(taskhub.BadInputError, match=message):
        taskhub.run_task("question-answering", item, model=str(text_models["qa"]))


def test_doc_stride_larger_than_span_is_a_param_error(text_models: dict[str, Path]) -> None:
    with pytest.raises(taskhub.ParamError, match="doc_stride"):
        taskhub.run_task("question-answering", SHORT, model=str(text_models["qa"]), max_seq_len=32, doc_stride=40)
