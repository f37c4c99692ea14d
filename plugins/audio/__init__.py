"""taskhub built-in audio plugin: speech recognition, audio classification, text-to-speech."""

from .audio_io import load_audio
from .tts import write_wav

__all__ = ["load_audio", "write_wav"]
