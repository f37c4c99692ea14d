"""taskhub built-in vision plugin: image tasks, and image loading other plugins reuse."""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "image_to_png_uri": ".encoding",
    "mask_to_rle": ".encoding",
    "png_uri_to_image": ".encoding",
    "rle_to_mask": ".encoding",
    "load_image": ".images",
}
__all__ = ["image_to_png_uri", "load_image", "mask_to_rle", "png_uri_to_image", "rle_to_mask"]


def __getattr__(name: str) -> Any:
    """Exports import their module on first use: importing the plugin stays cheap."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
