"""Image inputs: path, bytes, data URI, PIL image or numpy array -> upright RGB PIL image, with clear errors."""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from taskhub import StageContext
from taskhub.errors import BadInputError
from taskhub.registry import NoParams

EXPECTED = "an image path, image bytes, a data:image/... URI, a PIL.Image or a numpy array (HxWx3/4 uint8 or HxW)"
DATA_URI_PREFIX = "data:image/"
ORIENTATION = 0x0112  # EXIF tag

T = TypeVar("T")
R = TypeVar("R")
_pool: ThreadPoolExecutor | None = None


def map_in_threads(func: Callable[[T], R], items: list[T]) -> list[R]:
    """`func` over `items` on the shared decode pool (Pillow releases the GIL while decoding and resizing)."""
    global _pool
    if len(items) < 2:
        return [func(item) for item in items]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="taskhub-vision")
    return list(_pool.map(func, items))


def describe(value: Any, index: int) -> str:
    """How an error names an input: its path when it has one, else its kind and position."""
    if isinstance(value, (str, os.PathLike)) and not str(value).startswith(DATA_URI_PREFIX):
        return f"image file {os.fspath(value)!r}"
    kind = {bytes: "bytes", bytearray: "bytes", memoryview: "bytes", str: "data URI", np.ndarray: "array"}.get(
        type(value)
    )
    if isinstance(value, Image.Image):
        kind = "PIL image"
    return f"{kind or type(value).__name__} input {index}"


def open_image(value: Any, index: int) -> Image.Image:
    """Open `value` lazily (header only); its size is checked before any pixel is decoded or resized."""
    name = describe(value, index)
    return check_size(_open(value, index, name), name)


def check_size(image: Image.Image, name: str) -> Image.Image:
    """Every image, however it arrived: no zero side (no task can resize or classify it) and at most Pillow's
    decompression-bomb limit of pixels (Image.MAX_IMAGE_PIXELS), which files meet on opening and arrays and
    PIL images would otherwise skip."""
    width, height = image.size
    if width < 1 or height < 1:
        raise BadInputError(f"{name} is {width}x{height} pixels; expected an image at least 1x1.")
    cap = Image.MAX_IMAGE_PIXELS
    if cap is not None and width * height > cap:
        raise BadInputError(
            f"{name} is {width}x{height} = {width * height} pixels; expected at most {cap} "
            "(PIL.Image.MAX_IMAGE_PIXELS)."
        )
    return image


def _open(value: Any, index: int, name: str) -> Image.Image:
    """`value` as a PIL image, header only; Pillow's decompression-bomb limit is an error, not a warning."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return _from_array(value, name)
    if isinstance(value, str) and value.startswith(DATA_URI_PREFIX):
        source: Any = io.BytesIO(_data_uri_bytes(value, name))
    elif isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise BadInputError(f"{name} does not exist or is not a file; expected {EXPECTED}.")
        source = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(value))
    else:
        raise BadInputError(f"Input {index} is a {type(value).__name__}; expected {EXPECTED}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadInputError(f"{name} is too large to decode safely ({exc}).") from None
    except UnidentifiedImageError:
        raise BadInputError(f"{name} is not an image Pillow can read; expected {EXPECTED}.") from None
    except OSError as exc:
        raise BadInputError(f"{name} cannot be read: {exc}.") from None


def decode_image(image: Image.Image, name: str) -> Image.Image:
    """Decode pixels, apply the EXIF orientation and convert to RGB (what HF's load_image does)."""
    try:
        image.load()
        if image.getexif().get(ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        return image if image.mode == "RGB" else image.convert("RGB")  # no copy when nothing changes
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInputError(f"{name} is corrupt or truncated and cannot be decoded ({exc}).") from None


def load_image(value: Any, index: int = 0) -> Image.Image:
    """One input -> an upright RGB PIL image; any problem is a BadInputError naming the input."""
    return decode_image(open_image(value, index), describe(value, index))


def load_images(items: list[Any], params: NoParams, ctx: StageContext) -> list[Image.Image]:
    """Stage `vision.load_image`: headers are checked here, pixels decoded concurrently on the pool."""
    opened = [(open_image(value, i), describe(value, i)) for i, value in enumerate(items)]
    return map_in_threads(lambda pair: decode_image(*pair), opened)


def _data_uri_bytes(uri: str, name: str) -> bytes:
    try:
        return base64.b64decode(uri.split(",", 1)[1], validate=True)
    except (IndexError, binascii.Error):
        raise BadInputError(f"{name} is not valid base64 after 'data:image/...;base64,'.") from None


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    """HxW (grayscale) or HxWxC with C in 1, 3, 4; uint8 only, so no value range has to be guessed."""
    if array.dtype != np.uint8:
        raise BadInputError(f"{name} has dtype {array.dtype}; expected uint8 pixel values 0-255.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(array))  # mode L, RGB or RGBA from the shape
    raise BadInputError(f"{name} has shape {array.shape}; expected HxW or HxWxC with C in 1, 3 or 4.")
