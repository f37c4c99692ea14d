"""Audio input: files of each format, bytes, arrays and dicts; mono mix-down, resampling, and every bad input."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures_audio import SPEECH, read
from taskhub_audio import load_audio

from taskhub.errors import BadInputError


def test_wav_and_flac_decode_to_the_same_samples_ogg_close() -> None:
    wav = load_audio(SPEECH["hello.wav"], 0, 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    np.testing.assert_array_equal(wav, read("hello.wav"))
    np.testing.assert_array_equal(load_audio(str(SPEECH["hello.flac"]), 0, 16000), wav)
    ogg = load_audio(SPEECH["hello.ogg"], 0, 16000)
    assert ogg.shape == wav.shape and np.abs(ogg - wav).mean() < 0.01  # lossy codec


def test_mp3_decodes_through_libsndfile(tmp_path: Path) -> None:
    wav = read("numbers.wav")
    sf.write(tmp_path / "numbers.mp3", wav, 16000, format="MP3")
    mp3 = load_audio(tmp_path / "numbers.mp3", 0, 16000)
    assert mp3.shape == wav.shape and np.corrcoef(mp3, wav)[0, 1] > 0.99  # lossy codec


def test_bytes_equal_path_and_bare_array_is_taken_at_the_model_rate() -> None:
    wav = read("numbers.wav")
    np.testing.assert_array_equal(load_audio(SPEECH["numbers.wav"].read_bytes(), 0, 16000), wav)
    np.testing.assert_array_equal(load_audio(wav, 0, 16000), wav)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(wav), 0, 16000), wav)
    assert len(load_audio(wav, 0, 8000)) == len(wav)  # no sampling_rate given: no resampling


def test_dict_input_is_resampled_with_librosa() -> None:
    wav = read("numbers.wav")
    low = librosa.resample(wav, orig_sr=16000, target_sr=8000)
    for key in ("array", "raw"):
        got = load_audio({key: low, "sampling_rate": 8000}, 0, 16000)
        np.testing.assert_allclose(got, librosa.resample(low, orig_sr=8000, target_sr=16000), atol=1e-6)
        assert len(got) == 2 * len(low)


def test_8khz_file_is_resampled_to_16khz(tmp_path: Path) -> None:
    low = librosa.resample(read("numbers.wav"), orig_sr=16000, target_sr=8000)
    sf.write(tmp_path / "low.wav", low, 8000, subtype="FLOAT")
    got = load_audio(tmp_path / "low.wav", 0, 16000)
    np.testing.assert_allclose(got, librosa.resample(low, orig_sr=8000, target_sr=16000), atol=1e-6)


def test_stereo_is_mixed_down_to_the_channel_mean(tmp_path: Path) -> None:
    left = read("numbers.wav")
    right = np.roll(left, 400) * 0.5
    stereo = np.stack([left, right], axis=1)  # [samples, 2] as soundfile writes and reads it
    sf.write(tmp_path / "stereo.wav", stereo, 16000, subtype="FLOAT")
    expected = (left + right) / 2
    np.testing.assert_allclose(load_audio(tmp_path / "stereo.wav", 0, 16000), expected, atol=1e-7)
    np.testing.assert_allclose(load_audio(stereo, 0, 16000), expected, atol=1e-7)
    np.testing.assert_allclose(load_audio({"array": stereo.T, "sampling_rate": 16000}, 0, 16000), expected, atol=1e-7)


def test_integer_pcm_arrays_are_scaled() -> None:
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_array_equal(load_audio(pcm, 0, 16000), pcm.astype(np.float32) / 32768)


def _bad(value: object, *needles: str) -> None:
    with pytest.raises(BadInputError) as err:
        load_audio(value, 3, 16000)
    message = str(err.value)
    assert message.startswith("Input 3"), message
    for needle in needles:
        assert needle in message, message


def test_truncated_files_are_errors(tmp_path: Path) -> None:
    for name in ("hello.wav", "hello.ogg", "hello.flac"):
        data = SPEECH[name].read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(BadInputError, match=r"Input 3 .*cut-hello\.(wav|ogg|flac)"):
            load_audio(cut, 3, 16000)
    _bad(SPEECH["hello.wav"].read_bytes()[:70000], "(bytes)", "truncated")
    _bad(SPEECH["hello.flac"].read_bytes()[:40000], "(bytes)", "truncated or corrupt")


def test_unreadable_empty_missing_and_wrong_inputs(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    _bad(text, "notes.wav", "not readable audio", "expected an audio file")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _bad(empty, "empty file")
    silent = tmp_path / "zero.wav"
    sf.write(silent, np.zeros(0, dtype=np.float32), 16000)
    _bad(silent, "empty audio")
    _bad(tmp_path / "missing.wav", "missing.wav", "not an existing file")
    _bad(b"", "empty file")
    _bad(np.zeros(0, dtype=np.float32), "empty audio")
    _bad({"array": np.zeros(0), "sampling_rate": 16000}, "empty audio")
    _bad(12, "is a int", "expected an audio file path")
    _bad(["a.wav"], "is a list")
    _bad({"audio": np.zeros(10)}, "dict with keys ['audio']", "sampling_rate")
    _bad({"array": np.zeros(10), "sampling_rate": -5}, "positive integer")
    _bad({"array": [0.1, 0.2], "sampling_rate": 16000}, "'array' is a list")
    _bad(np.zeros((3, 3), dtype=np.float32), "shape (3, 3)")
    _bad(np.array(["a", "b"]), "array of <U1")
    _bad(np.array([0.0, np.nan], dtype=np.float32), "NaN")
