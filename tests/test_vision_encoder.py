"""The fused ViT encoder equals transformers' ViT (logits, hidden states, pooler) and is used only where it applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_vision import convnext_classifier, vit_classifier, vit_encoder  # noqa: F401
from taskhub_vision.loading import VisionModel, load_vision_model
from taskhub_vision.vit_encoder import ViTEncoder
from transformers import ViTForImageClassification

from taskhub.cpu_kernels import KERNELS, Linear
from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource
from taskhub.native import amx_bf16x3_available


def _load(
    path: Path, head: str, fused: bool = True, dtype: torch.dtype | None = None, **options: str | None
) -> VisionModel:
    options = {"head": head, "fused_encoder": fused, **options}
    return load_vision_model(ModelSource(model_id="vit", path=path, dtype=dtype, options=options))


def _pixels(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))


@pytest.mark.parametrize("kernel", [None, *KERNELS])
@pytest.mark.parametrize("batch", [1, 5])
def test_fused_classifier_logits_equal_transformers(vit_classifier: Path, kernel: str | None, batch: int) -> None:  # noqa: F811
    if kernel == "amx-bf16x3" and not amx_bf16x3_available():
        pytest.skip("the AMX bf16x3 kernel needs a CPU with AMX")
    vision = _load(vit_classifier, "image-classification", kernel=kernel)
    assert isinstance(vision.encoder, ViTEncoder) and vision.runner is vision.encoder
    linears = [m for m in vision.encoder.modules() if isinstance(m, Linear)]
    assert len(linears) == 4 * 2 and all(m.kernel_name == (kernel or m.kernel_name) in KERNELS for m in linears)
    pixels = _pixels(batch)
    with torch.inference_mode():
        ours = vision.encoder(pixel_values=pixels)
        theirs = vision.model(pixel_values=pixels)
    assert type(ours) is type(theirs)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-4)


def test_fused_bare_vit_equals_transformers(vit_encoder: Path) -> None:  # noqa: F811
    vision = _load(vit_encoder, "base")
    assert vision.encoder is not None
    pixels = _pixels(3)
    with torch.inference_mode():
        ours = vision.encoder(pixel_values=pixels)
        theirs = vision.model(pixel_values=pixels)
    assert torch.allclose(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-4)
    assert torch.allclose(ours.pooler_output, theirs.pooler_output, atol=1e-4)


def test_unusual_calls_run_the_transformers_model(vit_classifier: Path) -> None:  # noqa: F811
    vision = _load(vit_classifier, "image-classification")
    pixels = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))  # not the model's 32x32
    reference = ViTForImageClassification.from_pretrained(vit_classifier).eval()  # its own copy, not ours
    with torch.inference_mode():
        ours = vision.encoder(pixel_values=pixels, interpolate_pos_encoding=True)
        theirs = reference(pixel_values=pixels, interpolate_pos_encoding=True)
        assert torch.allclose(ours.logits, theirs.logits, atol=1e-5)
        with pytest.raises(ValueError, match="doesn't match model"):
            vision.encoder(pixel_values=pixels)


def test_encoder_only_where_it_applies(vit_classifier: Path, convnext_classifier: Path) -> None:  # noqa: F811
    assert _load(vit_classifier, "image-classification", fused=False).encoder is None
    assert _load(convnext_classifier, "image-classification").encoder is None
    with pytest.raises(ModelNotAvailableError, match="fused encoder on the CPU"):
        _load(convnext_classifier, "image-classification", quantize="int8")


@pytest.mark.parametrize(("dtype", "quantize"), [(torch.bfloat16, None), (None, "int8")])
def test_reduced_precision_classifier_agrees_with_transformers_fp32(
    vit_classifier: Path,  # noqa: F811
    dtype: torch.dtype | None,
    quantize: str | None,
) -> None:
    vision = _load(vit_classifier, "image-classification", dtype=dtype, quantize=quantize)
    assert vision.encoder is not None
    reference = ViTForImageClassification.from_pretrained(vit_classifier).eval()  # fp32, its own copy
    pixels = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        ours = vision.encoder(pixel_values=pixels.to(vision.dtype)).logits.float()
        theirs = reference(pixel_values=pixels).logits
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).min() >= 0.999
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.99
