"""automatic-speech-recognition: CTC and Whisper against transformers' pipeline and generate(), chunking, timestamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_audio import SPEECH, WHISPER_WINDOW_S, ctc_model, read, whisper_model  # noqa: F401
from taskhub_audio.whisper import merge_overlapping
from transformers import (
    AutoFeatureExtractor,
    AutoTokenizer,
    WhisperForConditionalGeneration,
)
from transformers import pipeline as hf_pipeline

from taskhub import pipeline
from taskhub.errors import ParamError


@pytest.fixture(scope="module")
def ctc(ctc_model: Path):  # noqa: F811
    ours = pipeline("asr", model=str(ctc_model), device="cpu")
    return ours, hf_pipeline("automatic-speech-recognition", model=str(ctc_model), device="cpu")


@pytest.fixture(scope="module")
def whisper(whisper_model: Path):  # noqa: F811
    model = WhisperForConditionalGeneration.from_pretrained(whisper_model).eval()
    return pipeline("automatic-speech-recognition", model=str(whisper_model), device="cpu"), model


def test_ctc_preprocessing_is_the_models_feature_extractor(ctc_model: Path) -> None:  # noqa: F811
    from taskhub_audio.features import extract

    extractor = AutoFeatureExtractor.from_pretrained(ctc_model)
    for name in ("hello.wav", "numbers.wav"):
        expected = extractor(read(name), sampling_rate=16000, return_tensors="pt").input_values
        torch.testing.assert_close(extract(extractor, read(name)).tensors["input_values"], expected, rtol=0, atol=0)


def test_ctc_transcripts_equal_the_transformers_pipeline(ctc) -> None:
    ours, theirs = ctc
    files = [str(SPEECH[n]) for n in ("hello.wav", "numbers.wav", "hello.flac")]
    got = ours(files, batch_size=2)
    expected = [theirs(read(n)) for n in ("hello.wav", "numbers.wav", "hello.wav")]
    assert got == expected
    assert all(len(r["text"].split()) > 1 for r in got)  # the tiny model does emit words


def test_ctc_long_audio_chunks_and_stitches_like_transformers(ctc) -> None:
    ours, theirs = ctc
    for kwargs in (
        {"chunk_length_s": 1.0, "stride_length_s": 0.2},
        {"chunk_length_s": 1.5},
        {"chunk_length_s": 1.0, "stride_length_s": (0.3, 0.1)},
    ):
        assert ours(str(SPEECH["hello.wav"]), **kwargs) == theirs(read("hello.wav"), **kwargs), kwargs
    chunked = ours(str(SPEECH["hello.wav"]), chunk_length_s=1.0)
    assert chunked != ours(str(SPEECH["hello.wav"]))  # chunking did change what the model saw


def test_ctc_word_and_char_timestamps_equal_transformers(ctc) -> None:
    ours, theirs = ctc
    for level in ("word", "char"):
        got = ours(str(SPEECH["hello.wav"]), return_timestamps=level)
        assert got == theirs(read("hello.wav"), return_timestamps=level)
        assert len(got["chunks"]) > 1
    got = ours(str(SPEECH["hello.wav"]), return_timestamps="word", chunk_length_s=1.0)
    assert got == theirs(read("hello.wav"), return_timestamps="word", chunk_length_s=1.0)


def test_chunk_timestamps_tile_the_audio(ctc) -> None:
    ours, _ = ctc
    duration = len(read("hello.wav")) / 16000
    got = ours(str(SPEECH["hello.wav"]), chunk_length_s=1.0, stride_length_s=0.2, return_timestamps=True)
    spans = [c["timestamp"] for c in got["chunks"]]
    assert spans[0][0] == 0.0 and spans[-1][1] == duration
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # kept parts meet exactly
    step = 1.0 - 2 * 0.2
    assert spans[1][0] == pytest.approx(1.0 - 0.2) and spans[2][0] == pytest.approx(1.0 - 0.2 + step)
    whole = ours(str(SPEECH["numbers.wav"]), return_timestamps="chunk")["chunks"]
    assert [c["timestamp"] for c in whole] == [(0.0, len(read("numbers.wav")) / 16000)]


def test_ctc_rejects_decoding_parameters(ctc) -> None:
    ours, _ = ctc
    with pytest.raises(ParamError, match="temperature.*Whisper"):
        ours(str(SPEECH["numbers.wav"]), temperature=0.5)
    with pytest.raises(ParamError, match="chunk_length_s"):
        ours(str(SPEECH["numbers.wav"]), chunk_length_s=1.0, stride_length_s=0.5)
    with pytest.raises(ParamError, match="stride_length_s"):
        ours(str(SPEECH["numbers.wav"]), chunk_length_s=1.0, stride_length_s=-0.1)


def _whisper_inputs(whisper_model: Path, audio: np.ndarray) -> torch.Tensor:  # noqa: F811
    extractor = AutoFeatureExtractor.from_pretrained(whisper_model)
    return extractor(audio, sampling_rate=16000, return_tensors="pt").input_features


def _hf_text(model: WhisperForConditionalGeneration, tokenizer, features: torch.Tensor, **kwargs) -> str:
    ids = model.generate(features, max_new_tokens=40, **kwargs)
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def test_whisper_preprocessing_is_the_models_feature_extractor(whisper_model: Path) -> None:  # noqa: F811
    from taskhub_audio.features import extract

    extractor = AutoFeatureExtractor.from_pretrained(whisper_model)
    ours = extract(extractor, read("numbers.wav")).tensors["input_features"]
    assert ours.shape == (1, 80, WHISPER_WINDOW_S * 100)
    torch.testing.assert_close(ours, _whisper_inputs(whisper_model, read("numbers.wav")), rtol=0, atol=0)


@pytest.mark.slow
def test_whisper_greedy_equals_generate_and_the_transformers_pipeline(
    whisper,
    whisper_model: Path,  # noqa: F811
) -> None:
    ours, model = whisper
    tokenizer = AutoTokenizer.from_pretrained(whisper_model)
    features = _whisper_inputs(whisper_model, read("numbers.wav"))
    got = ours(str(SPEECH["numbers.wav"]), max_new_tokens=40)
    assert got == {"text": _hf_text(model, tokenizer, features)}  # language detected, then transcribe
    assert len(got["text"]) > 5
    theirs = hf_pipeline("automatic-speech-recognition", model=str(whisper_model), device="cpu")
    assert got == theirs(read("numbers.wav"), num_beams=1, max_new_tokens=40)
    for language, task in (("fr", "transcribe"), ("english", "translate"), ("<|en|>", "transcribe")):
        expected = _hf_text(model, tokenizer, features, language=language, task=task)
        got = ours(str(SPEECH["numbers.wav"]), max_new_tokens=40, language=language, whisper_task=task)
        assert got["text"] == expected


@pytest.mark.slow
def test_whisper_sampling_controls_apply(whisper, whisper_model: Path) -> None:  # noqa: F811
    ours, model = whisper
    path = str(SPEECH["numbers.wav"])
    tokenizer = AutoTokenizer.from_pretrained(whisper_model)
    features = _whisper_inputs(whisper_model, read("numbers.wav"))
    for controls in ({"num_beams": 2}, {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2}):
        assert ours(path, max_new_tokens=40, **controls)["text"] == _hf_text(model, tokenizer, features, **controls)
    greedy = ours(path, max_new_tokens=40)
    assert ours(path, max_new_tokens=40, do_sample=True, top_k=1, seed=1) == greedy  # top-1 sampling is greedy
    first = ours(path, max_new_tokens=40, do_sample=True, temperature=1.5, seed=7)
    assert ours(path, max_new_tokens=40, do_sample=True, temperature=1.5, seed=7) == first
    draws = {ours(path, max_new_tokens=40, do_sample=True, temperature=1.5, seed=s)["text"] for s in range(4)}
    assert len(draws) > 1 and greedy["text"] not in draws
    short = ours(path, max_new_tokens=3)["text"]
    assert greedy["text"].startswith(short) and len(short) < len(greedy["text"])


def test_whisper_long_audio_is_split_into_windows(whisper, whisper_model: Path) -> None:  # noqa: F811
    ours, model = whisper
    tokenizer = AutoTokenizer.from_pretrained(whisper_model)
    audio = read("hello.wav")  # 4.3 s: two 3 s windows, no overlap
    window = WHISPER_WINDOW_S * 16000
    tokens = []
    for piece in (audio[:window], audio[window:]):
        ids = model.generate(_whisper_inputs(whisper_model, piece), max_new_tokens=20)[0].tolist()
        tokens += [t for t in ids if t not in tokenizer.all_special_ids]
    got = ours(str(SPEECH["hello.wav"]), max_new_tokens=20, return_timestamps=True)
    assert got["text"] == tokenizer.decode(tokens, skip_special_tokens=True)
    assert [c["timestamp"] for c in got["chunks"]] == [(0.0, 3.0), (3.0, len(audio) / 16000)]
    assert "".join(c["text"] for c in got["chunks"]) == got["text"]


def test_whisper_overlapping_chunks_merge_by_longest_overlap(whisper) -> None:
    assert merge_overlapping([[1, 2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8]], set()) == [[1, 2, 3, 4, 5], [6, 7], [8]]
    assert merge_overlapping([[1, 2, 3], [9, 3, 4]], set()) == [[1, 2, 3], [9, 3, 4]]  # one match is no overlap
    assert merge_overlapping([[1, 2, 99, 3], [2, 3, 4]], {99}) == [[1, 2, 3], [4]]  # special tokens ignored
    ours, _ = whisper
    overlapping = {"chunk_length_s": 2.0, "stride_length_s": 0.5}
    got = ours(str(SPEECH["hello.wav"]), max_new_tokens=20, return_timestamps="chunk", **overlapping)
    assert "".join(c["text"] for c in got["chunks"]) == got["text"]
    assert got["chunks"][0]["timestamp"] == (0.0, 1.5) and got["chunks"][1]["timestamp"] == (1.5, 2.5)


def test_whisper_rejects_what_it_cannot_do(whisper) -> None:
    ours, _ = whisper
    path = str(SPEECH["numbers.wav"])
    with pytest.raises(ParamError, match="CTC"):
        ours(path, return_timestamps="word")
    with pytest.raises(ParamError, match="Languages: en, fr"):
        ours(path, language="german")
    with pytest.raises(ParamError, match="whisper_task"):
        ours(path, whisper_task="summarize")
