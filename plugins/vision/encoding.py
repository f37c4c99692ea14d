"""JSON-ready forms of image-shaped results: masks as COCO run-length encoding, maps as PNG data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

PNG_URI_PREFIX = "data:image/png;base64,"


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A [H, W] boolean mask as uncompressed COCO RLE: column-major run lengths, starting with a run of 0s."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], starts, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> Image.Image:
    """The mode "L" 0/255 PIL mask (as HF's image-segmentation pipeline returns) for an RLE mask."""
    height, width = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=np.uint8)
    values[1::2] = 255
    flat = np.repeat(values, rle["counts"])
    return Image.fromarray(flat.reshape((height, width), order="F"))


def image_to_png_uri(image: Image.Image) -> str:
    """A PIL image as a lossless PNG data URI (opens in a browser; `png_uri_to_image` reads it back)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return PNG_URI_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_uri_to_image(uri: str) -> Image.Image:
    if not uri.startswith(PNG_URI_PREFIX):
        raise ValueError(f"expected a string starting with {PNG_URI_PREFIX!r}")
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(PNG_URI_PREFIX) :])))
    image.load()
    return image
