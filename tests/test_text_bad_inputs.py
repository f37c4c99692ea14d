"""Bad and extreme inputs to the text tasks: a clear BadInputError, or a defined result, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import transformers
from fixtures_text import CONTEXT, text_models  # noqa: F401

import taskhub

TEXT_TASKS = {
    "text-classification": ("classifier", {}),
    "token-classification": ("ner", {}),
    "zero-shot-classification": ("nli", {"candidate_labels": ["a", "b"]}),
    "fill-mask": ("mlm", {}),
    "feature-extraction": ("encoder", {}),
}
HUGE = "The quick brown fox jumps over the lazy dog near the river bank. " * 400  # ~6,000 tokens


def run(task: str, inputs: Any, paths: dict[str, Path], **params: Any) -> Any:
    role, defaults = TEXT_TASKS[task]
    return taskhub.run_task(task, inputs, model=str(paths[role]), **{**defaults, **params})


@pytest.mark.parametrize("task", sorted(TEXT_TASKS))
@pytest.mark.parametrize(("value", "named"), [(None, "None"), (42, "int"), ({"text": "hi"}, "dict"), (b"hi", "bytes")])
def test_non_string_inputs_are_rejected(text_models: dict[str, Path], task: str, value: Any, named: str) -> None:
    with pytest.raises(taskhub.BadInputError, match=rf"{named}.*expected a string"):
        run(task, value, text_models)
    with pytest.raises(taskhub.BadInputError, match=r"Input 1 "):
        run(task, ["fine [MASK] text", value], text_models)


def test_empty_text_gives_the_transformers_result(text_models: dict[str, Path]) -> None:
    classifier = transformers.pipeline("text-classification", model=str(text_models["classifier"]), device="cpu")
    [ours] = run("text-classification", "", text_models)
    [theirs] = classifier("")
    assert ours["label"] == theirs["label"] and ours["score"] == pytest.approx(theirs["score"], abs=1e-5)
    assert run("token-classification", "", text_models, ignore_labels=[]) == []
    assert len(run("feature-extraction", "", text_models)) == 32
    result = run("zero-shot-classification", "", text_models)
    assert sorted(result["labels"]) == ["a", "b"] and sum(result["scores"]) == pytest.approx(1.0)


def test_fill_mask_without_mask_says_which_token_is_missing(text_models: dict[str, Path]) -> None:
    for text in ["", "no mask here"]:
        with pytest.raises(taskhub.BadInputError, match=r"no mask token '\[MASK\]'"):
            run("fill-mask", text, text_models)


def test_fill_mask_top_k_beyond_the_vocabulary_gives_the_whole_vocabulary(text_models: dict[str, Path]) -> None:
    fill = transformers.pipeline("fill-mask", model=str(text_models["mlm"]), device="cpu")
    vocab = fill.tokenizer.vocab_size
    expected = fill("a [MASK] here", top_k=vocab)
    got = run("fill-mask", "a [MASK] here", text_models, top_k=10**9)
    assert len(got) == vocab == len(expected)
    assert [g["token"] for g in got[:20]] == [e["token"] for e in expected[:20]]
    assert [g["score"] for g in got[:20]] == pytest.approx([e["score"] for e in expected[:20]], abs=1e-5)


def test_huge_text_is_truncated_to_the_context(text_models: dict[str, Path]) -> None:
    classifier = transformers.pipeline("text-classification", model=str(text_models["classifier"]), device="cpu")
    [ours] = run("text-classification", HUGE, text_models)
    [theirs] = classifier(HUGE, truncation=True)
    assert ours["label"] == theirs["label"] and ours["score"] == pytest.approx(theirs["score"], abs=1e-5)
    entities = run("token-classification", HUGE, text_models, ignore_labels=[])
    assert 0 < len(entities) <= CONTEXT - 2 and entities[-1]["end"] < len(HUGE) // 10
    tokens = run("feature-extraction", HUGE, text_models, pooling="none")
    assert len(tokens) == CONTEXT
    assert run("zero-shot-classification", HUGE, text_models)["sequence"] == HUGE
    assert len(run("fill-mask", "[MASK] " + HUGE, text_models)) == 5
    with pytest.raises(taskhub.BadInputError, match="within the model's context"):
        run("fill-mask", HUGE + " [MASK]", text_models)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"candidate_labels": []}, "candidate_labels"),
        ({"candidate_labels": ["a"], "hypothesis_template": "no slot"}, "no {}"),
        ({"candidate_labels": ["a"], "hypothesis_template": "{} or {}"}, "exactly one {}"),
        ({"candidate_labels": ["a"], "hypothesis_template": "{0.__class__}"}, "exactly one {}"),
        ({"candidate_labels": ["a"], "hypothesis_template": "about {"}, "not a valid template"),
    ],
)
def test_zero_shot_needs_labels_and_a_template_slot(
    text_models: dict[str, Path], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(taskhub.BadInputError, match=message):
        run("zero-shot-classification", "some text", text_models, **params)


def test_unknown_or_invalid_params_list_the_valid_ones(text_models: dict[str, Path]) -> None:
    with pytest.raises(taskhub.ParamError, match="aggregation_strategy"):
        run("token-classification", "text", text_models, aggregation="simple")
    with pytest.raises(taskhub.ParamError, match="aggregation_strategy"):
        run("token-classification", "text", text_models, aggregation_strategy="longest")
    with pytest.raises(taskhub.ParamError, match="top_k"):
        run("text-classification", "text", text_models, top_k=0)
    with pytest.raises(taskhub.ParamError, match="stride"):
        run("token-classification", "text", text_models, stride=CONTEXT, aggregation_strategy="simple")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"source_sentence": "a"}, r"fields \['source_sentence'\]"),
        ({"source_sentence": "a", "sentences": "b"}, "non-empty list"),
        ({"source_sentence": "a", "sentences": []}, "non-empty list"),
        ({"source_sentence": "a", "sentences": ["b", None]}, r"sentences\[1\] is None"),
        ({"source_sentence": 3, "sentences": ["b"]}, "source_sentence is an int"),
        ("just a string", "expected a mapping"),
    ],
)
def test_sentence_similarity_input_errors_name_the_field(text_models: dict[str, Path], item: Any, message: str) -> None:
    with pytest.raises(taskhub.BadInputError, match=message):
        taskhub.run_task("sentence-similarity", item, model=str(text_models["encoder"]))
