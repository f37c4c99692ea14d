"""Tiny random vision checkpoints (ViT, ConvNeXT, DETR, SegFormer, Mask2Former, DPT, GLPN, CLIP) and image files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoImageProcessor,
    CLIPConfig,
    CLIPModel,
    ConvNextConfig,
    ConvNextForImageClassification,
    DetrConfig,
    DetrForObjectDetection,
    DPTConfig,
    DPTForDepthEstimation,
    GLPNConfig,
    GLPNForDepthEstimation,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    PreTrainedTokenizerFast,
    ResNetConfig,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SwinConfig,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.convnext.image_processing_pil_convnext import (
    ConvNextImageProcessorPil,
)
from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil
from transformers.models.glpn.image_processing_pil_glpn import GLPNImageProcessorPil
from transformers.models.mask2former.image_processing_pil_mask2former import (
    Mask2FormerImageProcessorPil,
)
from transformers.models.segformer.image_processing_pil_segformer import (
    SegformerImageProcessorPil,
)
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "images"
SAMPLE_FILES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
LABELS = ["cat", "dog", "car", "tree", "person"]


def _labels(n: int) -> dict[str, object]:
    return {"id2label": {i: LABELS[i] for i in range(n)}, "label2id": {LABELS[i]: i for i in range(n)}}


def _save(
    factory: pytest.TempPathFactory, name: str, model: torch.nn.Module, processor: object, tokenizer: object = None
) -> Path:
    path = factory.mktemp(name)
    model.eval().save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)  # type: ignore[attr-defined]
    if tokenizer is not None:
        tokenizer.save_pretrained(path)  # type: ignore[attr-defined]
    return path


def _tiny_resnet() -> ResNetConfig:
    return ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )


@pytest.fixture(scope="session")
def vit_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_labels(5),
    )
    return _save(
        tmp_path_factory,
        "vit",
        ViTForImageClassification(config),
        ViTImageProcessorPil(size={"height": 32, "width": 32}),
    )


@pytest.fixture(scope="session")
def vit_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare ViT with its pooler (the classifier checkpoint has none, so AutoModel would add a random one)."""
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return _save(tmp_path_factory, "vit-base", ViTModel(config), ViTImageProcessorPil(size={"height": 32, "width": 32}))


@pytest.fixture(scope="session")
def convnext_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **_labels(3))
    processor = ConvNextImageProcessorPil(size={"shortest_edge": 40}, crop_pct=0.875)
    return _save(tmp_path_factory, "convnext", ConvNextForImageClassification(config), processor)


@pytest.fixture(scope="session")
def detr_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = DetrConfig(
        backbone_config=_tiny_resnet(),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=12,
        **_labels(4),
    )
    processor = DetrImageProcessorPil(size={"shortest_edge": 48, "longest_edge": 80})
    return _save(tmp_path_factory, "detr", DetrForObjectDetection(config), processor)


@pytest.fixture(scope="session")
def segformer_segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        **_labels(4),
    )
    processor = SegformerImageProcessorPil(size={"height": 32, "width": 32})
    return _save(tmp_path_factory, "segformer", SegformerForSemanticSegmentation(config), processor)


@pytest.fixture(scope="session")
def mask2former_segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    backbone = SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=2,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        num_queries=6,
        encoder_layers=1,
        decoder_layers=2,
        dim_feedforward=64,
        num_attention_heads=2,
        encoder_feedforward_dim=64,
        common_stride=4,
        **_labels(3),
    )
    processor = Mask2FormerImageProcessorPil(size={"height": 64, "width": 64})
    return _save(tmp_path_factory, "mask2former", Mask2FormerForUniversalSegmentation(config), processor)


@pytest.fixture(scope="session")
def dpt_depth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = DPTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 16, 32],
        fusion_hidden_size=16,
        head_in_index=-1,
    )
    processor = DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False)
    return _save(tmp_path_factory, "dpt", DPTForDepthEstimation(config), processor)


@pytest.fixture(scope="session")
def glpn_depth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = GLPNConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        head_hidden_size=8,
    )
    return _save(tmp_path_factory, "glpn", GLPNForDepthEstimation(config), GLPNImageProcessorPil(size_divisor=32))


def _clip_tokenizer(eos: str) -> PreTrainedTokenizerFast:
    """Word-level BPE trained on a few captions, with <s> ... </s> around every text."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [f"This is a photo of a {label}." for label in LABELS] + ["a picture of something", "an image"]
    tokenizer.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<s>", eos, "<unk>"])
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"<s> $A {eos}", special_tokens=[("<s>", 1), (eos, 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token=eos,
        unk_token="<unk>",
        model_max_length=32,
    )


@pytest.fixture(scope="session")
def clip_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tokenizer = _clip_tokenizer("</s>")
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(tmp_path_factory, "clip", CLIPModel(config), processor, tokenizer)


def hf_processor(path: Path) -> object:
    """The checkpoint's own image processor, PIL backend (what both taskhub and the HF pipeline use)."""
    return AutoImageProcessor.from_pretrained(path, backend="pil")


@pytest.fixture(scope="session")
def exif_rotated_jpeg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90° clockwise to view), and its upright pixels."""
    upright = np.zeros((40, 60, 3), dtype=np.uint8)  # landscape: 40 high, 60 wide
    upright[:10, :, 0] = 255  # red band along the top edge
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 60 high, 40 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path_factory.mktemp("exif") / "sideways.jpg"
    stored.save(path, exif=exif, quality=100, subsampling=0)
    return path, upright


def png_claiming(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A PNG whose header claims width x height, with `pixels` as its (possibly bogus) compressed data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
