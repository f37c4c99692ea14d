"""Tiny random decoder checkpoints for the native model tests: every architecture and rope variant it covers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures_decoding import BOS, EOS, PAD, build_tokenizer
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
INIT = 0.1  # large enough that logits spread over several units, so 1e-4 agreement means something


def _llama(vocab: int, **overrides: Any) -> PreTrainedModel:
    config = dict(
        TINY,
        vocab_size=vocab,
        max_position_embeddings=256,
        initializer_range=INIT,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return LlamaForCausalLM(LlamaConfig(**{**config, **overrides}))


def builders(vocab: int) -> dict[str, Callable[[], PreTrainedModel]]:
    """Checkpoint name -> constructor of its random transformers model."""
    ids = dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    return {
        "gpt2": lambda: GPT2LMHeadModel(
            GPT2Config(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=2, n_head=4, initializer_range=INIT, **ids)
        ),
        "llama": lambda: _llama(vocab),
        "llama_tied": lambda: _llama(vocab, tie_word_embeddings=True),
        "llama_linear": lambda: _llama(vocab, rope_scaling={"rope_type": "linear", "factor": 2.0}),
        # max_position_embeddings below prompt + 64 new tokens, so the NTK base grows while decoding
        "llama_dynamic": lambda: _llama(
            vocab, max_position_embeddings=48, rope_scaling={"rope_type": "dynamic", "factor": 2.0}
        ),
        "llama3": lambda: _llama(
            vocab,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        ),
        "llama_yarn": lambda: _llama(
            vocab,
            max_position_embeddings=128,
            rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
        ),
        "mistral": lambda: MistralForCausalLM(
            MistralConfig(
                **TINY, vocab_size=vocab, max_position_embeddings=256, sliding_window=8, initializer_range=INIT, **ids
            )
        ),
        # qkv bias; layer 1 uses an 8-token sliding window, layer 0 full attention
        "qwen2": lambda: Qwen2ForCausalLM(
            Qwen2Config(
                **TINY,
                vocab_size=vocab,
                max_position_embeddings=256,
                use_sliding_window=True,
                sliding_window=8,
                max_window_layers=1,
                initializer_range=INIT,
                **ids,
            )
        ),
    }


def build_checkpoints(root: Path) -> dict[str, Path]:
    """Save every tiny checkpoint (plus a sharded and a bf16 copy of llama) with the shared tokenizer."""
    tokenizer = build_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    out = {}
    for name, build in builders(len(tokenizer)).items():
        model = build().eval()
        model.generation_config.pad_token_id = PAD
        model.save_pretrained(root / name, safe_serialization=True)
        tokenizer.save_pretrained(root / name)
        out[name] = root / name
        if name == "llama":
            model.save_pretrained(root / "llama_sharded", safe_serialization=True, max_shard_size="100KB")
            model.to(torch.bfloat16).save_pretrained(root / "llama_bf16", safe_serialization=True)
            out["llama_sharded"], out["llama_bf16"] = root / "llama_sharded", root / "llama_bf16"
    return out


@pytest.fixture(scope="session")
def textgen_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> directory of a tiny saved decoder checkpoint (see builders())."""
    return build_checkpoints(tmp_path_factory.mktemp("textgen_checkpoints"))
