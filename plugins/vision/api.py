"""The vision plugin's public API: what other plugins (multimodal) may use. Import nothing else of taskhub_vision."""

from .encoding import image_to_png_uri, mask_to_rle, png_uri_to_image, rle_to_mask
from .images import describe, load_image, map_in_threads
from .preprocess import DirectPath, run_processor

__all__ = [
    "DirectPath",
    "describe",
    "image_to_png_uri",
    "load_image",
    "map_in_threads",
    "mask_to_rle",
    "png_uri_to_image",
    "rle_to_mask",
    "run_processor",
]
