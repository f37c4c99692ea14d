"""Tiny random captioning and VLM checkpoints (ViT+GPT-2, BLIP, Llava) and sample images for the multimodal tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_decoding import BOS, EOS, PAD, build_tokenizer
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    GPT2Config,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessor,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "images"
IMAGE_TOKEN = "<image>"
INIT = 1.0  # wide enough that greedy captions vary between images and often end at EOS
VISION = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    initializer_range=INIT,
)
# Content parts of a message: images become <image> placeholders, texts are copied (like Llava's own templates).
LLAVA_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
WORDS = "a an the of on in with dog cat photo picture red blue sky tree house car person two small large near".split()


def build_vit_gpt2(path: Path) -> Path:
    """VisionEncoderDecoder: tiny ViT encoder + tiny GPT-2 decoder with cross-attention.

    The tokenizer is word-level (WordPiece), so every generated id decodes to visible text and
    comparing captions compares ids.
    """
    tokenizer = build_bert_tokenizer()
    start, eos, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        add_cross_attention=True,
        is_decoder=True,
        initializer_range=INIT,
        bos_token_id=start,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    config = VisionEncoderDecoderConfig(encoder=ViTConfig(**VISION), decoder=decoder)
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, eos, pad
    torch.manual_seed(0)
    VisionEncoderDecoderModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_bert_tokenizer() -> BertTokenizerFast:
    """WordPiece with BERT's specials at BERT-like positions, plus BLIP's [DEC] bos token."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        [" ".join(WORDS)] * 10 + ["A photo of a red car near the house."] * 10,
        trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        bos_token="[DEC]",
    )


def build_blip(path: Path) -> Path:
    """BlipForConditionalGeneration with a tiny ViT and BERT-style text decoder; BlipProcessor (PIL backend)."""
    tokenizer = build_bert_tokenizer()
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in [
            ("bos_token_id", "[DEC]"),
            ("sep_token_id", "[SEP]"),
            ("pad_token_id", "[PAD]"),
            ("eos_token_id", "[SEP]"),
        ]
    }
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        initializer_range=INIT,
        **ids,
    )
    config = BlipConfig(text_config=text, vision_config=dict(VISION), projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(path, safe_serialization=True)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def build_llava(path: Path) -> Path:
    """LlavaForConditionalGeneration: tiny CLIP vision tower + tiny Llama, <image> token and a chat template."""
    tokenizer = build_tokenizer(path / "tokenizer")
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(**VISION, projection_dim=32)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=INIT,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = PAD
    model.save_pretrained(path, safe_serialization=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    processor.save_pretrained(path)
    return path


def sample_images(folder: Path) -> list[Path]:
    """The sample photos in samples/images plus two generated JPEGs of other sizes (noise and a gradient)."""
    found = sorted(SAMPLES.glob("*.jpg")) + sorted(SAMPLES.glob("*.png"))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, 40 * 30 * 3).reshape(40, 30, 3).astype(np.uint8)
    for name, pixels in [("noise.jpg", noise), ("ramp.jpg", ramp)]:
        Image.fromarray(pixels).save(folder / name, quality=95)
        found.append(folder / name)
    return found


@pytest.fixture(scope="session")
def multimodal_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> directory of a tiny saved checkpoint: vit_gpt2, blip, llava."""
    root = tmp_path_factory.mktemp("multimodal_models")
    return {
        "vit_gpt2": build_vit_gpt2(root / "vit_gpt2"),
        "blip": build_blip(root / "blip"),
        "llava": build_llava(root / "llava"),
    }


@pytest.fixture(scope="session")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sample_images(tmp_path_factory.mktemp("multimodal_images"))
