"""A tiny Llama with a sentencepiece-style tokenizer (▁ for spaces, <0xNN> byte fallback) for structured output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_decoding import CORPUS
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>"]  # Llama's ids 0, 1, 2
BYTES = [f"<0x{b:02X}>" for b in range(256)]  # Llama's ids 3..258


def build_sentencepiece_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Laid out as Llama-2's tokenizer.json: Prepend/Replace normalizer, BPE with byte fallback, ▁ decoder."""
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[])
    trainer_tok.train_from_iterator(CORPUS + ['{}[]:,"0123456789-+.eEtrufalsn'] * 5, trainer=trainer)
    learned = trainer_tok.get_vocab()
    vocab = {token: i for i, token in enumerate(SPECIALS + BYTES)}
    for token, _ in sorted(learned.items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in _merges(trainer_tok)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left"
    )
    fast.pad_token = "</s>"
    fast.save_pretrained(path)
    return fast


def _merges(tok: Tokenizer) -> list:
    import json

    return json.loads(tok.to_str())["model"]["merges"]


def build_sentencepiece_llama(root: Path) -> Path:
    """A random 2-layer Llama over that tokenizer, saved as safetensors."""
    tokenizer = build_sentencepiece_tokenizer(root)
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = 2
    model.save_pretrained(root, safe_serialization=True)
    return root


@pytest.fixture(scope="session")
def sentencepiece_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama whose tokenizer works like Llama-2's sentencepiece one."""
    return build_sentencepiece_llama(tmp_path_factory.mktemp("sp_llama"))
