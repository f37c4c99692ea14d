"""Text tasks give transformers' pipeline outputs on the same tiny models: labels, spans and scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from fixtures_text import CORPUS, text_models  # noqa: F401

import taskhub

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "Sarah works at Google in London",
    "Unbelievably, the underdogs won!",
    "Hi",
    "The food was cold, the service slow, and I will not come back.",
]


def hf_pipeline(task: str, path: Path, **kwargs: Any) -> Any:
    return transformers.pipeline(task, model=str(path), tokenizer=str(path), device="cpu", **kwargs)


def assert_same(ours: Any, theirs: Any, path: str = "result") -> None:
    """Equal structure and values; floats within 1e-5."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), f"{path}: keys {ours} vs {theirs}"
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{path}: {ours} vs {theirs}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float) or hasattr(theirs, "dtype"):
        assert ours == pytest.approx(float(theirs), abs=1e-5), f"{path}: {ours} vs {theirs}"
    else:
        assert ours == theirs, f"{path}: {ours!r} vs {theirs!r}"


def test_text_classification_top_label_equals_transformers(text_models: dict[str, Path]) -> None:
    ours = taskhub.pipeline("sentiment-analysis", model=str(text_models["classifier"]))(TEXTS)
    theirs = hf_pipeline("text-classification", text_models["classifier"])(TEXTS)
    assert_same(ours, [[t] for t in theirs])


@pytest.mark.parametrize(("top_k", "function"), [(None, "default"), (2, "sigmoid"), (3, "none"), (1, "softmax")])
def test_text_classification_params_equal_transformers(
    text_models: dict[str, Path], top_k: int | None, function: str
) -> None:
    ours = taskhub.pipeline("text-classification", model=str(text_models["classifier"]))(
        TEXTS, top_k=top_k, function_to_apply=function
    )
    kwargs = {} if function == "default" else {"function_to_apply": function}
    theirs = hf_pipeline("text-classification", text_models["classifier"])(TEXTS, top_k=top_k, **kwargs)
    assert_same(ours, theirs)


def test_single_label_model_uses_sigmoid_like_transformers(text_models: dict[str, Path]) -> None:
    ours = taskhub.run_task("text-classification", TEXTS, model=str(text_models["scorer"]))
    theirs = hf_pipeline("text-classification", text_models["scorer"])(TEXTS)
    assert_same(ours, [[t] for t in theirs])
    assert all(0 < r[0]["score"] < 1 for r in ours)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_equals_transformers(text_models: dict[str, Path], strategy: str) -> None:
    ours = taskhub.pipeline("ner", model=str(text_models["ner"]), aggregation_strategy=strategy)
    theirs = hf_pipeline("token-classification", text_models["ner"], aggregation_strategy=strategy)
    assert_same(ours(TEXTS, ignore_labels=[]), theirs(TEXTS, ignore_labels=[]))
    default = ours(TEXTS)
    assert_same(default, theirs(TEXTS))
    assert all(e.get("entity", e.get("entity_group")) != "O" for entities in default for e in entities)


def test_token_classification_stride_chunks_long_text_like_transformers(text_models: dict[str, Path]) -> None:
    text = " ".join(CORPUS[:6])  # about four times the tiny model's context
    ours = taskhub.run_task(
        "ner", text, model=str(text_models["ner"]), stride=16, aggregation_strategy="first", ignore_labels=[]
    )
    theirs = hf_pipeline("token-classification", text_models["ner"], stride=16, aggregation_strategy="first")(
        text, ignore_labels=[]
    )
    assert_same(ours, theirs)
    assert ours[-1]["end"] > len(text) // 2  # entities come from the whole text, not the first chunk only
    with pytest.raises(taskhub.ParamError, match="aggregation_strategy"):
        taskhub.run_task("ner", text, model=str(text_models["ner"]), stride=16)


@pytest.mark.parametrize(
    ("labels", "kwargs"),
    [
        (["politics", "sports", "food", "weather"], {}),
        (["politics", "sports", "food"], {"multi_label": True}),
        (["travel"], {}),
        ("cooking, news ,sports", {"hypothesis_template": "The topic is {}."}),
    ],
)
def test_zero_shot_equals_transformers(text_models: dict[str, Path], labels: Any, kwargs: dict[str, Any]) -> None:
    ours = taskhub.run_task(
        "zero-shot-classification", TEXTS, model=str(text_models["nli"]), candidate_labels=labels, **kwargs
    )
    theirs = hf_pipeline("zero-shot-classification", text_models["nli"])(TEXTS, candidate_labels=labels, **kwargs)
    assert_same(ours, theirs)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 2}, {"targets": ["Paris", "city", "Berlinx"], "top_k": 5}])
def test_fill_mask_equals_transformers(text_models: dict[str, Path], kwargs: dict[str, Any]) -> None:
    texts = ["Paris is the [MASK] of France.", "The [MASK] fox jumps over the [MASK] dog.", "[MASK]"]
    ours = taskhub.run_task("fill-mask", texts, model=str(text_models["mlm"]), **kwargs)
    theirs = hf_pipeline("fill-mask", text_models["mlm"])(texts, **kwargs)
    assert_same(ours, theirs)
    assert len(ours[1]) == 2  # one candidate list per mask


# fp32 matmul precision "high" (the default: bf16x3 on AMX) keeps ~16 bits per product: 2.4e-5 measured at |x| 2.1
TOKEN_ATOL = 5e-5


def test_feature_extraction_token_vectors_equal_transformers(text_models: dict[str, Path]) -> None:
    pipe = taskhub.pipeline("feature-extraction", model=str(text_models["encoder"]))
    assert pipe.model.encoder is not None  # the fused encoder is what is compared
    theirs = hf_pipeline("feature-extraction", text_models["encoder"])(TEXTS)
    tokens = pipe(TEXTS, pooling="none")
    for ours_one, theirs_one in zip(tokens, theirs):
        assert torch.allclose(torch.tensor(ours_one), torch.tensor(theirs_one[0]), atol=TOKEN_ATOL)
    for pooled, theirs_one in zip(pipe(TEXTS), theirs):
        expected = torch.nn.functional.normalize(torch.tensor(theirs_one[0]).mean(0), dim=0)
        assert torch.allclose(torch.tensor(pooled), expected, atol=1e-5)
    for cls, theirs_one in zip(pipe(TEXTS, pooling="cls", normalize=False), theirs):
        assert torch.allclose(torch.tensor(cls), torch.tensor(theirs_one[0][0]), atol=TOKEN_ATOL)


@pytest.mark.parametrize(
    "task",
    [
        "feature-extraction",
        "sentence-similarity",
        "text-classification",
        "token-classification",
        "zero-shot-classification",
        "fill-mask",
        "question-answering",
    ],
)
def test_each_call_param_belongs_to_one_stage(task: str) -> None:
    registry = taskhub.get_registry()
    entry, _ = registry.task(task)
    assert entry.plugin == "text"
    names = [
        name for ref in entry.manifest.stage_refs() for name in registry.stages.get(ref.stage).params_model.model_fields
    ]
    assert len(names) == len(set(names)), names
