"""Every vision task equals transformers.pipeline on the same tiny checkpoint: labels, scores, boxes, masks, depth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures_vision import (  # noqa: F401
    LABELS,
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
    vit_encoder,
)
from PIL import Image
from taskhub_vision import png_uri_to_image, rle_to_mask
from transformers import AutoTokenizer
from transformers import pipeline as hf_pipeline

import taskhub
from taskhub.errors import ParamError

IMAGES = [str(p) for p in SAMPLE_FILES]
TOL = 1e-5


def _hf(task: str, path: Path, **kwargs: Any) -> Any:
    return hf_pipeline(task, model=str(path), image_processor=hf_processor(path), device="cpu", **kwargs)


def assert_same(ours: Any, theirs: Any, where: str = "result") -> None:
    """Equal structure and values; floats within TOL; PIL images equal pixel for pixel."""
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=TOL), where
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, Image.Image):
        assert ours.mode == theirs.mode and np.array_equal(np.asarray(ours), np.asarray(theirs)), where
    else:
        assert ours == theirs, where


@pytest.mark.parametrize("fixture", ["vit_classifier", "convnext_classifier"])
def test_image_classification(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    hf, ours = _hf("image-classification", path), taskhub.pipeline("image-classification", str(path))
    assert_same(ours(IMAGES, batch_size=2), hf(IMAGES))
    for params in ({"top_k": 2}, {"function_to_apply": "sigmoid"}, {"function_to_apply": "none", "top_k": 10}):
        assert_same(ours(IMAGES[0], **params), hf(IMAGES[0], **params), str(params))
    assert len(ours(IMAGES[0], top_k=99)) == hf.model.config.num_labels  # top_k above num_labels: all labels


def test_object_detection(detr_detector: Path) -> None:  # noqa: F811
    hf, ours = _hf("object-detection", detr_detector), taskhub.pipeline("object-detection", str(detr_detector))
    for threshold in (0.0, 0.21, 0.5):
        expected = hf(IMAGES, threshold=threshold)
        got = ours(
            IMAGES, threshold=threshold, batch_size=1
        )  # DETR results depend on padding: one image per batch like HF
        assert_same(got, expected, f"threshold={threshold}")
    assert len(got[0]) == 0 and len(ours(IMAGES[0], threshold=0.0)) == 12  # 12 queries, none scores above 0.5
    box = ours(IMAGES[0], threshold=0.0)[0]["box"]
    assert set(box) == {"xmin", "ymin", "xmax", "ymax"} and all(isinstance(v, int) for v in box.values())


def _coco_decode(rle: dict[str, Any]) -> np.ndarray:
    """An uncompressed COCO RLE as a 0/255 [H, W] array, decoded by pycocotools (the COCO reference)."""
    mask_api = pytest.importorskip("pycocotools.mask")
    height, width = rle["size"]
    return mask_api.decode(mask_api.frPyObjects(rle, height, width)).astype(np.uint8) * 255


def _masks_as_pil(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**segment, "mask": Image.fromarray(_coco_decode(segment["mask"]))} for segment in result]


def test_semantic_segmentation_masks_equal_hf(segformer_segmenter: Path) -> None:  # noqa: F811
    hf, ours = (
        _hf("image-segmentation", segformer_segmenter),
        taskhub.pipeline("image-segmentation", str(segformer_segmenter)),
    )
    expected = hf(IMAGES)
    rle = ours(IMAGES, batch_size=2)
    assert_same([_masks_as_pil(r) for r in rle], expected)
    assert_same(ours(IMAGES, mask_format="pil"), expected)
    assert all(len(r) >= 2 for r in rle)  # several classes per image, so the masks really differ
    json.dumps(rle)


@pytest.mark.parametrize(
    "params",
    [
        {"threshold": 0.0, "subtask": "instance"},
        {"threshold": 0.0, "mask_threshold": 0.0, "overlap_mask_area_threshold": 0.0},
        {"subtask": "semantic"},
    ],
    ids=["instance", "panoptic", "semantic"],
)
def test_mask2former_segmentation_equals_hf(mask2former_segmenter: Path, params: dict[str, Any]) -> None:  # noqa: F811
    hf, ours = (
        _hf("image-segmentation", mask2former_segmenter),
        taskhub.pipeline("image-segmentation", str(mask2former_segmenter)),
    )
    expected = hf(IMAGES, **params)
    assert sum(len(r) for r in expected) > 0
    assert_same([_masks_as_pil(r) for r in ours(IMAGES, **params)], expected, str(params))


@pytest.fixture(scope="module")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The samples at a quarter of their size: GLPN keeps the input size, and depth lists are H x W."""
    folder = tmp_path_factory.mktemp("small")
    paths = []
    for path in SAMPLE_FILES:
        image = Image.open(path)
        image.resize((image.width // 4, image.height // 4)).save(folder / path.name)
        paths.append(str(folder / path.name))
    return paths


@pytest.mark.parametrize("fixture", ["dpt_depth", "glpn_depth"])
def test_depth_estimation(fixture: str, request: pytest.FixtureRequest, small_images: list[str]) -> None:
    path = request.getfixturevalue(fixture)
    hf, ours = _hf("depth-estimation", path), taskhub.pipeline("depth-estimation", str(path))
    expected = hf(small_images)
    got = ours(small_images, batch_size=1)
    full = ours(small_images, depth_values="list", depth_format="pil", batch_size=1)
    for mine, values, theirs in zip(got, full, expected):
        depth = theirs["predicted_depth"]
        assert mine["predicted_depth"]["shape"] == list(depth.shape)
        for stat in ("min", "max", "mean"):
            assert mine["predicted_depth"][stat] == pytest.approx(getattr(depth, stat)().item(), rel=TOL, abs=1e-12)
        np.testing.assert_allclose(np.array(values["predicted_depth"]), depth.numpy(), rtol=TOL, atol=1e-12)
        assert_same(png_uri_to_image(mine["depth"]), theirs["depth"])
        assert_same(values["depth"], theirs["depth"])
    json.dumps(got)


def test_depth_map_has_the_input_size(dpt_depth: Path) -> None:  # noqa: F811
    result = taskhub.run_task("depth-estimation", IMAGES[0], model=str(dpt_depth))
    width, height = Image.open(IMAGES[0]).size
    assert result["predicted_depth"]["shape"] == [height, width]
    assert png_uri_to_image(result["depth"]).size == (width, height)


def test_image_feature_extraction(vit_encoder: Path) -> None:  # noqa: F811
    hf = _hf("image-feature-extraction", vit_encoder)
    ours = taskhub.pipeline("image-feature-extraction", str(vit_encoder))
    got, expected = ours(IMAGES, batch_size=2), hf(IMAGES)
    assert np.array(got[0]).shape == (1, 17, 32)  # [1, 1 + (32/8)^2 patches, hidden]
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=TOL)
    np.testing.assert_allclose(np.array(ours(IMAGES, pool=True)), np.array(hf(IMAGES, pool=True)), atol=TOL)


def test_zero_shot_image_classification(clip_model: Path) -> None:  # noqa: F811
    hf = _hf("zero-shot-image-classification", clip_model, tokenizer=AutoTokenizer.from_pretrained(clip_model))
    ours = taskhub.pipeline("zero-shot-image-classification", str(clip_model))
    labels = LABELS[:4]
    assert_same(ours(IMAGES, candidate_labels=labels, batch_size=2), hf(IMAGES, candidate_labels=labels))
    template = "a picture of {}"
    assert_same(
        ours(IMAGES[0], candidate_labels=labels, hypothesis_template=template),
        hf(IMAGES[0], candidate_labels=labels, hypothesis_template=template),
    )
    scores = [r["score"] for r in ours(IMAGES[0], candidate_labels=labels)]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ParamError, match="needs candidate_labels"):
        ours(IMAGES[0])


def test_batched_results_equal_one_by_one(vit_classifier: Path) -> None:  # noqa: F811
    ours = taskhub.pipeline("image-classification", str(vit_classifier))
    inputs = IMAGES * 3
    together = ours(inputs, batch_size=4)
    for value, result in zip(inputs, together):
        assert_same(result, ours(value))


def test_unknown_params_are_rejected(vit_classifier: Path) -> None:  # noqa: F811
    with pytest.raises(ParamError, match="Unknown parameter 'threshold'"):
        taskhub.pipeline("image-classification", str(vit_classifier))(IMAGES[0], threshold=0.5)


def test_results_are_json_ready(detr_detector: Path, vit_classifier: Path) -> None:  # noqa: F811
    for task, path in [("object-detection", detr_detector), ("image-classification", vit_classifier)]:
        result = taskhub.run_task(task, IMAGES, model=str(path))
        assert json.loads(json.dumps(result)) == result


def test_rle_round_trip() -> None:
    from taskhub_vision import mask_to_rle

    rng = np.random.default_rng(3)
    for mask in (rng.random((5, 7)) > 0.5, np.ones((3, 4), bool), np.zeros((2, 2), bool)):
        rle = mask_to_rle(mask)
        assert sum(rle["counts"]) == mask.size and rle["size"] == list(mask.shape)
        np.testing.assert_array_equal(_coco_decode(rle), mask.astype(np.uint8) * 255)
        np.testing.assert_array_equal(np.asarray(rle_to_mask(rle)), mask.astype(np.uint8) * 255)
    assert mask_to_rle(np.array([[1, 0], [1, 1]], bool))["counts"] == [0, 2, 1, 1]  # column-major, 0s first


def test_bfloat16_model_agrees_with_hf_in_bfloat16(vit_classifier: Path) -> None:  # noqa: F811
    ours = taskhub.pipeline("image-classification", str(vit_classifier), dtype="bfloat16")
    assert ours.model.model.dtype == torch.bfloat16 and ours.model.encoder is not None
    hf = _hf("image-classification", vit_classifier, dtype=torch.bfloat16)
    # the fused encoder's oneDNN bf16 kernels round differently from transformers' (bf16 keeps ~3 digits)
    for mine, theirs in zip(ours(IMAGES, batch_size=1), hf(IMAGES)):
        assert [r["label"] for r in mine] == [r["label"] for r in theirs]
        assert [r["score"] for r in mine] == pytest.approx([r["score"] for r in theirs], abs=5e-3)
