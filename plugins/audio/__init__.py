"""taskhub built-in audio plugin: speech recognition, audio classification, text-to-speech."""

from importlib import import_module
from typing import Any

_EXPORTS = {"load_audio": ".audio_io", "write_wav": ".tts"}
__all__ = ["load_audio", "write_wav"]


def __getattr__(name: str) -> Any:
    """Exports import their module on first use: importing the plugin stays cheap."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
