"""taskhub built-in vision plugin: image tasks, and image loading other plugins reuse."""

from .encoding import image_to_png_uri, mask_to_rle, png_uri_to_image, rle_to_mask
from .images import load_image

__all__ = ["image_to_png_uri", "load_image", "mask_to_rle", "png_uri_to_image", "rle_to_mask"]
