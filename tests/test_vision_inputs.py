"""Image inputs: every accepted form gives HF's RGB image; every bad input is a BadInputError naming it."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fixtures_vision import (  # noqa: F401
    SAMPLE_FILES,
    exif_rotated_jpeg,
    png_claiming,
    vit_classifier,
)
from PIL import Image
from taskhub_vision import load_image
from taskhub_vision.images import load_images
from transformers.image_utils import load_image as hf_load_image

import taskhub
from taskhub.errors import BadInputError


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_path_bytes_and_data_uri_decode_like_hf_load_image(path: Path) -> None:
    expected = _pixels(hf_load_image(str(path)))
    data = path.read_bytes()
    uri = f"data:image/{path.suffix[1:]};base64," + base64.b64encode(data).decode()
    for value in (str(path), path, data, bytearray(data), uri):
        np.testing.assert_array_equal(_pixels(load_image(value)), expected)


def test_pil_and_numpy_inputs() -> None:
    rgba = Image.open(SAMPLE_FILES[-1])
    np.testing.assert_array_equal(_pixels(load_image(rgba)), _pixels(hf_load_image(rgba)))
    hwc = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_pixels(load_image(hwc)), hwc)
    gray = hwc[:, :, 0]
    np.testing.assert_array_equal(_pixels(load_image(gray)), np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(_pixels(load_image(gray[:, :, None])), np.repeat(gray[:, :, None], 3, axis=2))
    with_alpha = np.concatenate([hwc, np.full((7, 9, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(_pixels(load_image(with_alpha)), hwc)


def test_exif_orientation_is_applied(exif_rotated_jpeg: tuple[Path, np.ndarray]) -> None:  # noqa: F811
    path, upright = exif_rotated_jpeg
    assert Image.open(path).size == (40, 60)  # stored sideways
    image = load_image(str(path))
    assert image.size == (60, 40)
    pixels = _pixels(image).astype(int)
    assert np.abs(pixels - upright).max() <= 8  # JPEG rounding only: the red band is on top again
    np.testing.assert_array_equal(pixels, _pixels(hf_load_image(str(path))))


def test_batch_decoding_on_the_pool_matches_one_by_one() -> None:
    values = [str(p) for p in SAMPLE_FILES] * 3
    together = load_images(values, None, None)  # type: ignore[arg-type]
    for value, image in zip(values, together):
        np.testing.assert_array_equal(_pixels(image), _pixels(load_image(value)))


def test_decompression_bomb_is_an_error() -> None:
    huge = png_claiming(100_000, 100_000)  # 10^10 pixels: over twice Pillow's limit
    with pytest.raises(BadInputError, match="bytes input 0 is too large to decode safely"):
        load_image(huge)


def test_image_over_the_limit_is_an_error_not_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # over the limit, under twice it: Pillow only warns
    with pytest.raises(BadInputError, match=r"image file '.*big\.png' is too large"):
        load_image(str(path))


def test_corrupt_truncated_and_non_image_files(tmp_path: Path) -> None:
    data = SAMPLE_FILES[0].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(png_claiming(8, 8, b"not zlib data" * 4))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(BadInputError, match=r"image file '.*truncated\.jpg' is corrupt or truncated"):
        load_image(str(truncated))
    with pytest.raises(BadInputError, match=r"image file '.*corrupt\.png' is corrupt or truncated"):
        load_image(str(corrupt))
    with pytest.raises(BadInputError, match=r"image file '.*notes\.txt' is not an image"):
        load_image(str(text))
    with pytest.raises(BadInputError, match="bytes input 3 is not an image"):
        load_image(b"plain bytes", 3)
    with pytest.raises(BadInputError, match=r"image file '.*missing\.jpg' does not exist"):
        load_image(str(tmp_path / "missing.jpg"))
    with pytest.raises(BadInputError, match="data URI input 0 is not valid base64"):
        load_image("data:image/png;base64,@@@")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (42, "Input 2 is a int; expected an image path"),
        (np.zeros((4, 4, 3), dtype=np.float32), "array input 2 has dtype float32; expected uint8"),
        (np.zeros((4, 4, 2), dtype=np.uint8), r"array input 2 has shape \(4, 4, 2\)"),
    ],
    ids=["int", "float-array", "two-channels"],
)
def test_wrong_types_are_rejected(value: object, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_image(value, 2)


def test_run_task_reports_the_bad_file(vit_classifier: Path, tmp_path: Path) -> None:  # noqa: F811
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    pipe = taskhub.pipeline("image-classification", str(vit_classifier))
    with pytest.raises(BadInputError, match=r"broken\.jpg"):
        pipe([str(SAMPLE_FILES[0]), str(bad)])
    buffer = io.BytesIO()
    Image.open(SAMPLE_FILES[0]).save(buffer, format="PNG")
    assert pipe(buffer.getvalue()) == pipe(str(SAMPLE_FILES[0]))  # lossless re-encode: same result


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 8, 3), (8, 0, 4), (0, 5), (5, 0, 1)])
def test_an_image_with_a_zero_side_is_refused_naming_its_size(shape: tuple[int, ...]) -> None:
    height, width = shape[:2]
    with pytest.raises(
        BadInputError, match=rf"^array input 1 is {width}x{height} pixels; expected an image at least 1x1"
    ):
        load_image(np.zeros(shape, np.uint8), 1)
    with pytest.raises(
        BadInputError, match=rf"^PIL image input 0 is {width}x{height} pixels; expected .* at least 1x1"
    ):
        load_images([Image.new("RGB", (width, height))], None, None)  # type: ignore[arg-type]


def test_a_zero_sized_image_gets_no_classification(vit_classifier: Path) -> None:  # noqa: F811
    """The reproduction: a 0x0 array went through resizing and came back classified."""
    with pytest.raises(BadInputError, match=r"array input 1 is 0x0 pixels"):
        taskhub.run_task("image-classification", [np.zeros((4, 4, 3), np.uint8), np.zeros((0, 0, 3), np.uint8)],
                         model=str(vit_classifier))  # fmt: skip


def test_arrays_and_pil_images_meet_the_pixel_cap_files_meet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's decompression-bomb limit guards files on opening; an array or PIL image skipped it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    message = r"is 64x64 = 4096 pixels; expected at most 4095 \(PIL.Image.MAX_IMAGE_PIXELS\)"
    with pytest.raises(BadInputError, match="array input 0 " + message):
        load_image(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(BadInputError, match="PIL image input 0 " + message):
        load_image(Image.new("RGB", (64, 64)))
    assert load_image(np.zeros((63, 65, 3), np.uint8)).size == (65, 63)  # at the cap: accepted
