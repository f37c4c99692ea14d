"""One Pipeline and one cached model shared by many threads: each call gets what it gets alone."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import taskhub
from tests.fixtures_text import text_models  # noqa: F401

TEXT = "the quick brown fox jumps over the lazy dog and runs far away " * 3


@pytest.fixture
def fine_grained_switching() -> Iterator[None]:
    """Switch threads as often as possible, so a race shows up within a few hundred calls."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def hammer(
    calls: dict[Any, Callable[[], Any]], expected: dict[Any, Any], rounds: int, threads_per_call: int = 2
) -> list:
    """Run every call from its own threads `rounds` times; return (key, got) for each wrong answer."""
    wrong: list = []

    def work(key: Any) -> None:
        for _ in range(rounds):
            got = calls[key]()
            if got != expected[key]:
                wrong.append((key, got))

    threads = [threading.Thread(target=work, args=(key,)) for key in calls for _ in range(threads_per_call)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wrong


@pytest.mark.slow
def test_feature_extraction_max_length_does_not_leak_between_threads(text_models, fine_grained_switching):
    pipe = taskhub.pipeline("feature-extraction", str(text_models["encoder"]), device="cpu")
    calls = {m: (lambda m=m: len(pipe(TEXT, max_length=m, pooling="none"))) for m in (3, 40)}
    # reference: the tokenizer's own count, each length alone
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(text_models["encoder"])
    expected = {m: len(tokenizer(TEXT, truncation=True, max_length=m)["input_ids"]) for m in calls}
    assert expected[3] == 3 and expected[40] > 3
    assert hammer(calls, expected, rounds=300) == []


LANGUAGES = ["eng_Latn", "deu_Latn", "fra_Latn"]


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory):
    """A tiny NLLB-style translation model whose tokenizer marks the source language with a token."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    path = tmp_path_factory.mktemp("nllb")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece in "▁the ▁house ▁is ▁big t h e o u s i b g".split():
        vocab.setdefault(piece, len(vocab))
    tokenizer = NllbTokenizer(vocab=vocab, merges=[], src_lang="eng_Latn", additional_special_tokens=LANGUAGES)
    torch.manual_seed(0)
    config = M2M100Config(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        init_std=1.0,
    )
    M2M100ForConditionalGeneration(config).eval().save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def nllb_reference(path, text: str, src: str, tgt: str) -> str:
    """transformers' own translation: a fresh tokenizer told the source language, greedy decoding."""
    from transformers import AutoModelForSeq2SeqLM, NllbTokenizer

    tokenizer = NllbTokenizer.from_pretrained(path, src_lang=src)
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    out = model.generate(
        **tokenizer(text, return_tensors="pt"),
        forced_bos_token_id=tokenizer.convert_tokens_to_ids(tgt),
        max_new_tokens=6,
        do_sample=False,
        num_beams=1,
    )
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0]


@pytest.mark.slow
def test_translation_src_lang_never_changes_the_shared_tokenizer(nllb_dir, fine_grained_switching):
    text = "the house is big"
    pipe = taskhub.pipeline("translation", str(nllb_dir), device="cpu")
    expected = {src: [{"translation_text": nllb_reference(nllb_dir, text, src, "deu_Latn")}] for src in LANGUAGES[::2]}
    assert len(set(map(str, expected.values()))) == 2, "the two source languages must translate differently"
    calls = {src: (lambda src=src: pipe(text, src_lang=src, tgt_lang="deu_Latn", max_new_tokens=6)) for src in expected}
    assert hammer(calls, expected, rounds=20) == []
    assert pipe.model.tokenizer.src_lang == "eng_Latn"  # as loaded
    with pytest.raises(taskhub.ParamError, match="xx_Latn"):
        pipe(text, src_lang="xx_Latn", tgt_lang="deu_Latn")
