"""Tiny random Gemma 2, Gemma 3 (text) and Phi-3 checkpoints: windows, soft-caps and LongRoPE small enough to bite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fixtures_decoding import BOS, EOS, PAD, build_tokenizer
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedModel,
    SiglipVisionConfig,
)

WINDOW = 8  # sliding window of the local layers: prompts of 21 tokens and 64 new ones reach far past it
ORIGINAL_CONTEXT = 32  # Phi-3 LongRoPE switches from short to long factors past this many positions
SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    initializer_range=0.1,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
)


def _rotary_factors(n: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (1.0 + 3.0 * torch.rand(n, generator=g)).tolist()


def _random_norms(model: PreTrainedModel) -> PreTrainedModel:
    """Gemma initialises its (1 + w) norms at w = 0; random w makes the parity tests see the norm weights."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return model


def family_builders(vocab: int) -> dict[str, Callable[[], PreTrainedModel]]:
    """Checkpoint name -> constructor of its random transformers model."""
    return {
        # local layer 0, global layer 1; query_pre_attn_scalar != head_dim; caps low enough to squash
        "gemma2": lambda: _random_norms(
            Gemma2ForCausalLM(
                Gemma2Config(
                    **SHAPE,
                    vocab_size=vocab,
                    num_hidden_layers=2,
                    query_pre_attn_scalar=24,
                    sliding_window=WINDOW,
                    attn_logit_softcapping=2.0,
                    final_logit_softcapping=4.0,
                )
            )
        ),
        # local, global, local; local RoPE base 10k, global 1M with linear scaling; QK-norm; final cap
        "gemma3": lambda: _random_norms(
            Gemma3ForCausalLM(
                Gemma3TextConfig(
                    **SHAPE,
                    vocab_size=vocab,
                    num_hidden_layers=3,
                    query_pre_attn_scalar=16,
                    sliding_window=WINDOW,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                    rope_parameters={
                        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                    },
                    final_logit_softcapping=4.0,
                )
            )
        ),
        # the language model of an image-text Gemma 3 checkpoint, run on text alone; transformers ignores
        # the final soft-cap of its text_config there, so the 4.0 below checks the native path does too
        "gemma3_multimodal": lambda: _random_norms(
            Gemma3ForConditionalGeneration(
                Gemma3Config(
                    text_config=Gemma3TextConfig(
                        **SHAPE,
                        vocab_size=vocab,
                        num_hidden_layers=2,
                        query_pre_attn_scalar=16,
                        sliding_window=WINDOW,
                        final_logit_softcapping=4.0,
                    ).to_dict(),
                    vision_config=SiglipVisionConfig(
                        hidden_size=32,
                        intermediate_size=64,
                        num_hidden_layers=1,
                        num_attention_heads=2,
                        image_size=28,
                        patch_size=14,
                    ).to_dict(),
                    mm_tokens_per_image=4,
                    image_token_index=vocab - 1,
                    boi_token_index=vocab - 2,
                    eoi_token_index=vocab - 3,
                )
            )
        ),
        # LongRoPE: 21-token prompts stay short, decoding crosses 32 positions into the long factors
        "phi3_longrope": lambda: Phi3ForCausalLM(
            Phi3Config(
                **{**SHAPE, "max_position_embeddings": 128},
                vocab_size=vocab,
                num_hidden_layers=2,
                original_max_position_embeddings=ORIGINAL_CONTEXT,
                rope_parameters={
                    "rope_type": "longrope",
                    "rope_theta": 10_000.0,
                    "short_factor": _rotary_factors(8, 2),
                    "long_factor": _rotary_factors(8, 3),
                },
            )
        ),
        # sliding window on every layer, RoPE on half of each head (Phi-4-mini's partial_rotary_factor)
        "phi3_window": lambda: Phi3ForCausalLM(
            Phi3Config(
                **SHAPE,
                vocab_size=vocab,
                num_hidden_layers=2,
                sliding_window=WINDOW,
                rope_parameters={"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5},
            )
        ),
    }


def build_family_checkpoints(root: Path) -> dict[str, Path]:
    tokenizer = build_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    out = {}
    for name, build in family_builders(len(tokenizer)).items():
        model = build().eval()
        model.generation_config.pad_token_id = PAD
        model.save_pretrained(root / name, safe_serialization=True)
        tokenizer.save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> directory of a tiny Gemma 2 / Gemma 3 / Phi-3 checkpoint (see family_builders())."""
    return build_family_checkpoints(tmp_path_factory.mktemp("family_checkpoints"))
