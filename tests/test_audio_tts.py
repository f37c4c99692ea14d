"""text-to-speech: VITS audio equals transformers' pipeline with the same seed; seeds, batching, write_wav."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_audio import vits_model  # noqa: F401
from taskhub_audio import write_wav
from transformers import pipeline as hf_pipeline
from transformers import set_seed

from taskhub import pipeline, run_task
from taskhub.errors import BadInputError, ParamError


@pytest.fixture(scope="module")
def tts(vits_model: Path):  # noqa: F811
    return pipeline("text-to-speech", model=str(vits_model), device="cpu")


def test_audio_equals_the_transformers_pipeline_with_the_same_seed(tts, vits_model: Path) -> None:  # noqa: F811
    theirs = hf_pipeline("text-to-audio", model=str(vits_model), device="cpu")
    for text, seed in (("Hello world.", 3), ("one, two, three", 11)):
        set_seed(seed)
        expected = theirs(text)
        got = tts(text, seed=seed)
        assert got["sampling_rate"] == expected["sampling_rate"] == 16000
        assert isinstance(got["audio"], list) and isinstance(got["audio"][0], float)
        np.testing.assert_allclose(np.array(got["audio"]), expected["audio"], atol=1e-5, rtol=0)


def test_seed_makes_audio_reproducible_and_batch_independent(tts) -> None:
    first = tts("a reproducible sentence", seed=5)
    assert tts("a reproducible sentence", seed=5) == first
    assert tts("a reproducible sentence", seed=6)["audio"] != first["audio"]
    batch = tts(["short", "a reproducible sentence", "another one"], seed=5, batch_size=3)
    assert batch[1] == first


def test_alias_and_run_task(vits_model: Path) -> None:  # noqa: F811
    got = run_task("text-to-audio", "hello", model=str(vits_model), device="cpu", seed=1)
    assert got == pipeline("tts", model=str(vits_model), device="cpu")("hello", seed=1)


def test_write_wav_round_trips(tts, tmp_path: Path) -> None:
    result = tts("write me", seed=2)
    for suffix in (".wav", ".flac"):
        path = write_wav(result, tmp_path / f"out{suffix}")
        samples, rate = sf.read(path, dtype="float32")
        assert rate == result["sampling_rate"] and len(samples) == len(result["audio"])
        np.testing.assert_allclose(samples, np.clip(result["audio"], -1, 1), atol=1 / 2**15)


def test_bad_inputs(tts) -> None:
    for bad, match in (("", "nothing to speak"), ("   ", "nothing to speak"), ("!!?", "nothing to speak")):
        with pytest.raises(BadInputError, match=match):
            tts(bad)
    with pytest.raises(BadInputError, match="Input 1 is a int"):
        tts(["fine", 3])
    with pytest.raises(ParamError, match="seed"):
        tts("fine", seed="abc")
