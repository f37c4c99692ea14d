"""audio-classification: labels and scores equal transformers' pipeline; preprocessing is the model's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_audio import LABELS, SPEECH, ast_model, classifier_model, read  # noqa: F401
from transformers import AutoFeatureExtractor
from transformers import pipeline as hf_pipeline

from taskhub import pipeline
from taskhub.errors import BadInputError

NAMES = ("hello.wav", "numbers.wav")


@pytest.fixture(scope="module")
def pipes(classifier_model: Path):  # noqa: F811
    ours = pipeline("audio-classification", model=str(classifier_model), device="cpu")
    return ours, hf_pipeline("audio-classification", model=str(classifier_model), device="cpu")


def _assert_same(got: list[dict], expected: list[dict]) -> None:
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-5)


def test_preprocessing_is_the_models_feature_extractor(classifier_model: Path) -> None:  # noqa: F811
    from taskhub_audio.features import extract

    extractor = AutoFeatureExtractor.from_pretrained(classifier_model)
    for name in NAMES:
        expected = extractor(read(name), sampling_rate=16000, return_tensors="pt").input_values
        torch.testing.assert_close(extract(extractor, read(name)).tensors["input_values"], expected, rtol=0, atol=0)


def test_labels_and_scores_equal_the_transformers_pipeline(pipes) -> None:
    ours, theirs = pipes
    got = ours([str(SPEECH[n]) for n in NAMES], top_k=None, batch_size=2)
    for result, name in zip(got, NAMES):
        _assert_same(result, theirs(read(name), top_k=None))
        assert sorted(r["label"] for r in result) == sorted(LABELS)
    _assert_same(ours(str(SPEECH["numbers.wav"]), top_k=2), theirs(read("numbers.wav"), top_k=2))
    assert len(ours(str(SPEECH["numbers.wav"]))) == 5  # default top_k
    for function in ("sigmoid", "none"):
        _assert_same(
            ours(str(SPEECH["hello.wav"]), function_to_apply=function, top_k=3),
            theirs(read("hello.wav"), function_to_apply=function, top_k=3),
        )


@pytest.mark.slow
def test_batches_of_equal_length_run_together_and_match_single_runs(pipes) -> None:
    ours, _ = pipes
    audio = read("numbers.wav")
    inputs = [audio, audio * 0.5, {"array": audio[::2].copy(), "sampling_rate": 8000}]
    batched = ours(inputs, batch_size=3, top_k=None)
    for item, result in zip(inputs, batched):
        _assert_same(result, ours(item, top_k=None))


def test_bad_inputs_name_the_input(pipes, tmp_path: Path) -> None:
    ours, _ = pipes
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio")
    with pytest.raises(BadInputError, match=r"Input 1 \(.*fake\.wav\) is not readable audio"):
        ours([str(SPEECH["numbers.wav"]), str(fake)])
    with pytest.raises(BadInputError, match="Input 0 is a int"):
        ours(5)


def test_audio_spectrogram_transformer_equals_transformers(ast_model: Path) -> None:  # noqa: F811
    from taskhub_audio.features import extract

    ours = pipeline("audio-classification", model=str(ast_model), device="cpu")
    theirs = hf_pipeline("audio-classification", model=str(ast_model), device="cpu")
    extractor = AutoFeatureExtractor.from_pretrained(ast_model)
    for name in NAMES:
        expected = extractor(read(name), sampling_rate=16000, return_tensors="pt").input_values
        torch.testing.assert_close(extract(extractor, read(name)).tensors["input_values"], expected, rtol=0, atol=0)
    got = ours([str(SPEECH[n]) for n in NAMES], top_k=None, batch_size=2)  # fixed-size inputs: one forward
    for result, name in zip(got, NAMES):
        _assert_same(result, theirs(read(name), top_k=None))
