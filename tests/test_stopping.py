"""Streaming detokenizer and stop-string filter on a byte-level BPE tokenizer."""

from __future__ import annotations

import pytest
from fixtures_decoding import build_tokenizer
from taskhub_textgen.stopping import IncrementalDetokenizer, StopFilter, cut_at_stop, find_stop

TEXT = "Café 🙂 日本語 déjà vu ½ — ok"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("stopping_tok"))


def test_multibyte_characters_never_split(tokenizer):
    ids = tokenizer.encode(TEXT)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in pieces), "the text must contain characters split over tokens"
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == tokenizer.decode(ids) == TEXT


def test_incomplete_character_at_the_end_is_flushed(tokenizer):
    ids = tokenizer.encode("ok 🙂")
    detok = IncrementalDetokenizer(tokenizer)
    emitted = "".join(detok.push(i) for i in ids[:-1])
    assert "\ufffd" not in emitted
    assert emitted + detok.flush() == tokenizer.decode(ids[:-1])


def test_find_stop_prefers_the_occurrence_that_completes_first():
    assert find_stop("xabcx", ["abc", "b"]) == (2, 3)
    assert find_stop("xabcx", ["bc", "abc"]) == (1, 4)
    assert find_stop("none", ["z"]) is None
    assert cut_at_stop("hello world", ["o w"], include_stop=False) == ("hell", True)
    assert cut_at_stop("hello world", ["o w"], include_stop=True) == ("hello w", True)


@pytest.mark.parametrize(
    "include_stop, expected",
    [(False, "one E"), (True, "one END t")],  # "ND t" completes (at 9) before "ENDING" (at 18)
)
def test_stop_filter_holds_back_possible_stop_prefixes(include_stop, expected):
    text = "one END two ENDING"
    stops = ["ENDING", "ND t"]
    for size in (1, 2, 3, 5):
        f = StopFilter(stops, include_stop)
        out = ""
        for start in range(0, len(text), size):
            out += f.push(text[start : start + size])
            assert expected.startswith(out)
        out += f.flush()
        assert out == expected and f.stopped


def test_stop_filter_without_stop_emits_everything():
    f = StopFilter(["XYZ"], include_stop=False)
    out = f.push("abcX") + f.push("Y") + f.push("q")
    assert out == "abcXYq"[: len(out)] and f.held == ""
    assert out + f.flush() == "abcXYq"


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """A sentencepiece-style tokenizer: decoding drops the leading space of the first token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    tok.train_from_iterator(
        ["the quick brown fox jumps over the lazy dog"] * 10,
        trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>"]),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_prompt_context_keeps_the_first_tokens_space(metaspace_tokenizer):
    from taskhub_textgen.config import GenerationConfig
    from taskhub_textgen.generate import finish_text

    tokenizer = metaspace_tokenizer
    ids = tokenizer.encode("the quick brown fox jumps")
    prompt, output = ids[:2], ids[2:]
    expected = tokenizer.decode(ids)[len(tokenizer.decode(prompt)) :]  # what transformers' pipeline returns
    assert expected.startswith(" ") and not tokenizer.decode(output).startswith(" ")
    assert finish_text(tokenizer, output, "length", GenerationConfig(), context=prompt) == expected
    detok = IncrementalDetokenizer(tokenizer, context=prompt)
    assert "".join(detok.push(i) for i in output) + detok.flush() == expected
