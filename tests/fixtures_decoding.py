"""Tiny random checkpoints for decoding tests: byte-level BPE tokenizer, GPT-2, Llama, BART, T5."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0, 1, 2, 3
PAD, BOS, EOS = 0, 1, 2
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A stop string may straddle two tokens, then it must still be found.",
    "Café crème brûlée, naïve façade, jalapeño — déjà vu.",
    "日本語のテキストと中文文本 mixed with English words.",
    "Summaries keep the important sentences of a long document.",
    "Translate English to German: the house is wonderful.",
] * 20
T5_TASK_PARAMS = {
    "summarization": {"prefix": "summarize: ", "num_beams": 2, "max_length": 12},
    "translation_en_to_de": {"prefix": "translate English to German: ", "max_length": 10},
}
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def build_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Byte-level BPE (so characters outside the merges split into byte tokens), left padding."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def _save(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    model.generation_config.pad_token_id = PAD
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_models(root: Path) -> dict[str, Path]:
    """Save every tiny model with the shared tokenizer; name -> directory."""
    tokenizer = build_tokenizer(root / "tokenizer")
    vocab = len(tokenizer)
    ids = dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    torch.manual_seed(0)
    builders = {
        "gpt2": lambda: GPT2LMHeadModel(
            GPT2Config(vocab_size=vocab, n_positions=256, n_embd=32, n_layer=2, n_head=2, initializer_range=0.2, **ids)
        ),
        "llama": lambda: LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                initializer_range=0.2,
                **ids,
            )
        ),
        "neox": lambda: GPTNeoXForCausalLM(  # not covered by the native decoder: runs through transformers
            GPTNeoXConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=256,
                initializer_range=0.2,
                **ids,
            )
        ),
        "bart": lambda: BartForConditionalGeneration(
            BartConfig(
                vocab_size=vocab,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                max_position_embeddings=256,
                decoder_start_token_id=EOS,
                forced_bos_token_id=None,
                forced_eos_token_id=None,
                init_std=0.2,
                **ids,
            )
        ),
        "t5": lambda: T5ForConditionalGeneration(
            T5Config(
                vocab_size=vocab,
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                decoder_start_token_id=PAD,
                initializer_factor=4.0,
                pad_token_id=PAD,
                eos_token_id=EOS,
                task_specific_params=T5_TASK_PARAMS,
            )
        ),
    }
    return {name: _save(build(), tokenizer, root / name) for name, build in builders.items()}


@pytest.fixture(scope="session")
def decoding_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> saved tiny checkpoint (gpt2, llama, neox, bart, t5)."""
    return build_models(tmp_path_factory.mktemp("decoding_models"))


@pytest.fixture(scope="session")
def decoding_models(decoding_model_dirs: dict[str, Path]) -> dict[str, tuple[torch.nn.Module, PreTrainedTokenizerFast]]:
    """name -> (loaded model in eval mode, tokenizer)."""
    out = {}
    for name, path in decoding_model_dirs.items():
        auto = AutoModelForSeq2SeqLM if name in ("bart", "t5") else AutoModelForCausalLM
        out[name] = (auto.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    return out
