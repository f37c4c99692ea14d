"""Audio input: a path, bytes, an array or an {"array", "sampling_rate"} dict -> mono float32 at the model's rate.

Accepted inputs (`index` only names the input in errors):

- a path (str or os.PathLike) or the bytes of a file: anything libsndfile reads (WAV, FLAC,
  Ogg Vorbis/Opus, MP3 with libsndfile >= 1.1). The file's own rate is resampled to the target.
- ``{"array": ndarray, "sampling_rate": int}`` (``"raw"`` may stand for ``"array"``), as
  Hugging Face pipelines and `datasets` use: resampled from ``sampling_rate``.
- a bare numpy array or torch tensor: taken to be **already at the model's rate** (as the HF
  pipelines do); wrap it in the dict form when it is not.

Arrays may be 1-D (mono) or 2-D with a channel axis of at most 8 on either side, i.e.
``(samples, channels)`` as soundfile returns or ``(channels, samples)`` as librosa and
torchaudio return; channels are averaged. Integer samples are scaled to [-1, 1].
Resampling is ``librosa.resample`` with its default (soxr, high quality).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf

from taskhub.errors import BadInputError

EXPECTED = (
    "expected an audio file path, the bytes of an audio file (wav, flac, ogg, mp3), "
    'a numpy array at the model\'s sampling rate, or {"array": ndarray, "sampling_rate": int}'
)
MAX_CHANNELS = 8
DEFAULT_MAX_SECONDS = 3600.0  # one input's longest duration; TASKHUB_MAX_AUDIO_SECONDS overrides it
MAX_SOURCE_RATE = 192_000  # a file's frames are capped at the longest duration at this rate
# libsndfile notes a chunk that claims more bytes than the file holds as "data : N (should be M)".
_SHORT_CHUNK = re.compile(r"^\s*(\w+)\s*: (\d+) \(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_SIZE = 0xFFFFFFFF  # streaming writers that never went back to fill in the size


def load_audio(value: Any, index: int, target_rate: int) -> np.ndarray:
    """One input as a 1-D float32 waveform at `target_rate`; BadInputError naming the input otherwise."""
    if isinstance(value, (str, os.PathLike)):
        name = f"Input {index} ({value})"
        samples, rate = _read_path(Path(value), name, target_rate)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        name = f"Input {index} (bytes)"
        samples, rate = _read_file(io.BytesIO(bytes(value)), name, target_rate)
    elif isinstance(value, dict):
        samples, rate = _from_dict(value, index)
        name = f"Input {index}"
    elif _is_array(value):
        samples, rate = _as_array(value, f"Input {index}"), target_rate
        name = f"Input {index}"
    else:
        raise BadInputError(f"Input {index} is a {type(value).__name__}; {EXPECTED}.")
    mono = _to_mono(samples, name)
    check_length(mono.size, rate, target_rate, name)
    if mono.size == 0:
        raise BadInputError(f"{name} is empty audio (0 samples); expected at least one sample.")
    if not np.isfinite(mono).all():
        raise BadInputError(f"{name} contains NaN or infinite samples; expected finite values in [-1, 1].")
    if rate != target_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=target_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def max_seconds() -> float:
    """The longest audio one input may be: TASKHUB_MAX_AUDIO_SECONDS, default one hour."""
    raw = os.environ.get("TASKHUB_MAX_AUDIO_SECONDS", "")
    try:
        limit = float(raw) if raw else DEFAULT_MAX_SECONDS
    except ValueError:
        limit = -1.0
    if not limit > 0 or limit == float("inf"):
        raise BadInputError(f"TASKHUB_MAX_AUDIO_SECONDS must be a positive number of seconds, got {raw!r}.")
    return limit


def check_length(frames: int, rate: int, target_rate: int, name: str) -> None:
    """Refuse audio longer than `max_seconds()` before it is read or resampled, so the memory it
    needs is bounded: a header declaring a 1 Hz rate must not ask for gigabytes after resampling."""
    limit = max_seconds()
    seconds = frames / rate
    if seconds > limit or frames > limit * MAX_SOURCE_RATE:
        raise BadInputError(
            f"{name} is {seconds:g} s of audio ({frames} samples at {rate} Hz); the limit is {limit:g} s "
            "per input (set TASKHUB_MAX_AUDIO_SECONDS to allow more)."
        )


def _read_path(path: Path, name: str, target_rate: int) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise BadInputError(f"{name} is not an existing file (or not a regular one); {EXPECTED}.")
    with path.open("rb") as handle:
        return _read_file(handle, name, target_rate)


def _read_file(handle: Any, name: str, target_rate: int) -> tuple[np.ndarray, int]:
    """Decode with soundfile; a file that is cut short is an error, not silently half the audio."""
    if handle.seek(0, io.SEEK_END) == 0:
        raise BadInputError(f"{name} is an empty file (0 bytes); {EXPECTED}.")
    handle.seek(0)
    try:
        audio = sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"{name} is not readable audio ({_reason(exc)}); {EXPECTED}.") from None
    with audio:
        declared, log, rate = audio.frames, audio.extra_info, audio.samplerate
        check_length(declared, rate, target_rate, name)
        try:
            samples = audio.read(dtype="float32", always_2d=True)  # [frames, channels]
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise BadInputError(f"{name} is truncated or corrupt: decoding failed ({_reason(exc)}).") from None
    if _is_truncated(log, declared, len(samples)):
        raise BadInputError(f"{name} is truncated: the file ends before the audio its header announces.")
    return samples.mean(axis=1), rate


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text


def _is_truncated(log: str, declared: int, read: int) -> bool:
    """What libsndfile tells about a cut file: a short chunk, a missing Ogg end, or missing frames."""
    for _, size, actual in _SHORT_CHUNK.findall(log):
        if int(actual) < int(size) < _UNKNOWN_SIZE:
            return True
    return "lacks an end-of-stream" in log or 0 < read < declared


def _from_dict(value: dict[str, Any], index: int) -> tuple[np.ndarray, int]:
    key = "array" if "array" in value else "raw"
    rate = value.get("sampling_rate")
    if key not in value or rate is None:
        raise BadInputError(
            f"Input {index} is a dict with keys {sorted(value)}; expected "
            '{"array": ndarray, "sampling_rate": int} (or "raw" for "array").'
        )
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise BadInputError(f"Input {index}: sampling_rate must be a positive integer, got {rate!r}.")
    if not _is_array(value[key]):
        raise BadInputError(f"Input {index}: {key!r} is a {type(value[key]).__name__}; expected a numpy array.")
    return _as_array(value[key], f"Input {index}"), int(rate)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or type(value).__module__ == "torch" and hasattr(value, "numpy")


def _as_array(value: Any, name: str) -> np.ndarray:
    array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    if not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(f"{name} is an array of {array.dtype}; expected float (or integer PCM) samples.")
    return array.astype(np.float32, copy=False)


def _to_mono(samples: np.ndarray, name: str) -> np.ndarray:
    """Average the channel axis of a 2-D array: the short one (at most MAX_CHANNELS); files arrive mono."""
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2:
        rows, cols = samples.shape
        if cols <= MAX_CHANNELS and (rows > MAX_CHANNELS or rows == 0):
            return samples.mean(axis=1)
        if rows <= MAX_CHANNELS and (cols > MAX_CHANNELS or cols == 0):
            return samples.mean(axis=0)
    raise BadInputError(
        f"{name} has shape {tuple(samples.shape)}; expected mono samples (n,) or 2-D audio with at most "
        f"{MAX_CHANNELS} channels, (samples, channels) or (channels, samples)."
    )
