"""Preprocessing equals the checkpoint's own HF image processor: pixel values, masks and batch padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_vision import (  # noqa: F401
    SAMPLE_FILES,
    clip_model,
    convnext_classifier,
    detr_detector,
    dpt_depth,
    glpn_depth,
    hf_processor,
    mask2former_segmenter,
    segformer_segmenter,
    vit_classifier,
)
from PIL import Image
from taskhub_vision import load_image
from taskhub_vision.forward import batches
from taskhub_vision.preprocess import DirectPath, preprocess
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

import taskhub
from taskhub.registry import NoParams

TASK_OF = {
    "vit_classifier": ("image-classification", True),
    "clip_model": ("zero-shot-image-classification", True),
    "convnext_classifier": ("image-classification", False),
    "detr_detector": ("object-detection", False),
    "segformer_segmenter": ("image-segmentation", False),
    "mask2former_segmenter": ("image-segmentation", False),
    "dpt_depth": ("depth-estimation", False),
    "glpn_depth": ("depth-estimation", False),
}


def _random_images() -> list[Image.Image]:
    """Odd sizes and aspect ratios, portrait and landscape, smaller and larger than the model input."""
    rng = np.random.default_rng(1)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(37, 45), (301, 97), (640, 480)]
    ]


@pytest.mark.parametrize("fixture", list(TASK_OF))
def test_pixel_values_equal_the_hf_processor_on_the_samples(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    task, direct = TASK_OF[fixture]
    pipe = taskhub.pipeline(task, str(path))
    processor = hf_processor(path)
    assert (DirectPath.of(pipe.model.processor) is not None) == direct
    images = [load_image(str(p)) for p in SAMPLE_FILES] + _random_images()
    prepared = preprocess(images, NoParams(), pipe.context)
    for image, item in zip(images, prepared):
        expected = processor(images=[image], return_tensors="pt")
        assert set(item.tensors) == {k for k, v in expected.items() if isinstance(v, torch.Tensor)}
        for key, tensor in item.tensors.items():
            assert torch.equal(tensor, expected[key][0]), f"{fixture}: {key} differs"
        assert item.size == (image.height, image.width)


@pytest.mark.parametrize(
    "processor",
    [
        ViTImageProcessorPil(size={"height": 50, "width": 70}, resample=3),
        CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 64, "width": 24}),
        CLIPImageProcessorPil(do_center_crop=False, do_normalize=False),
        ViTImageProcessorPil(do_resize=False, image_mean=[0.1, 0.2, 0.3], image_std=[0.9, 0.8, 0.7]),
    ],
    ids=["fixed-bicubic", "crop-larger-than-image", "rescale-only", "no-resize"],
)
def test_direct_path_is_bit_exact(processor: object) -> None:
    direct = DirectPath.of(processor)  # type: ignore[arg-type]
    assert direct is not None
    for image in _random_images():
        expected = processor(images=[image], return_tensors="pt")["pixel_values"][0]  # type: ignore[operator]
        got = direct(image).tensors["pixel_values"]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got, expected)


def test_processors_the_direct_path_cannot_reproduce_are_called_as_they_are() -> None:
    assert DirectPath.of(ViTImageProcessorPil(size={"max_height": 64, "max_width": 64})) is None
    padded = CLIPImageProcessorPil()
    padded.do_pad = True
    assert DirectPath.of(padded) is None


def test_detr_batches_pad_like_the_processor_pads_a_list(detr_detector: Path) -> None:  # noqa: F811
    pipe = taskhub.pipeline("object-detection", str(detr_detector))
    images = [load_image(str(p)) for p in SAMPLE_FILES] + _random_images()[:1]
    prepared = preprocess(images, NoParams(), pipe.context)
    [(indices, inputs)] = list(batches(prepared, pipe.model))
    expected = hf_processor(detr_detector)(images=images, return_tensors="pt")
    assert indices == [0, 1, 2]
    assert torch.equal(inputs["pixel_values"], expected["pixel_values"])
    assert torch.equal(inputs["pixel_mask"], expected["pixel_mask"])


def test_shapes_without_a_pixel_mask_run_in_groups(glpn_depth: Path) -> None:  # noqa: F811
    pipe = taskhub.pipeline("depth-estimation", str(glpn_depth))
    images = _random_images() + [_random_images()[0]]
    prepared = preprocess(images, NoParams(), pipe.context)
    groups = list(batches(prepared, pipe.model))
    assert [g for g, _ in groups] == [[0, 3], [1], [2]]  # GLPN keeps each image's size (to a multiple of 32)
    for indices, inputs in groups:
        assert torch.equal(inputs["pixel_values"], torch.stack([prepared[i].tensors["pixel_values"] for i in indices]))


def test_an_image_too_small_for_the_processor_is_a_bad_input(glpn_depth: Path) -> None:  # noqa: F811
    tiny = np.zeros((8, 40, 3), dtype=np.uint8)  # GLPN rounds height down to a multiple of 32: zero
    with pytest.raises(taskhub.BadInputError, match="A 40x8 image cannot be prepared for this model"):
        taskhub.pipeline("depth-estimation", str(glpn_depth))(tiny)
