"""Split a document into chunks with character offsets: by tokens with overlap, by sentences, by Markdown headings."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from taskhub.errors import ParamError

Chunker = Literal["tokens", "sentences", "markdown"]
CHUNKERS: tuple[str, ...] = ("tokens", "sentences", "markdown")
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n\s*\n|\n(?=#)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)

# text -> (start, end) character offsets of each token, special tokens left out
TokenOffsets = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    """A span of a document: text[start:end] of the document, plus metadata of its own (the heading)."""

    text: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)


def tokenizer_offsets(tokenizer: Any) -> TokenOffsets:
    """Token offsets from a Hugging Face fast tokenizer (the embedding model's own)."""

    def offsets(text: str) -> list[tuple[int, int]]:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"] if b > a]

    return offsets


def check_sizes(chunk_tokens: int, overlap: int) -> None:
    if chunk_tokens < 1 or overlap < 0 or overlap >= chunk_tokens:
        raise ParamError(
            f"chunk_tokens must be >= 1 and 0 <= overlap < chunk_tokens (got chunk_tokens={chunk_tokens}, overlap={overlap})"
        )


def chunk_document(
    text: str, chunker: Chunker, offsets: TokenOffsets, chunk_tokens: int = 256, overlap: int = 32
) -> list[Chunk]:
    """The chunks of `text`; none for a blank document."""
    check_sizes(chunk_tokens, overlap)
    if chunker == "tokens":
        return by_tokens(text, offsets, chunk_tokens, overlap)
    if chunker == "sentences":
        return by_sentences(text, offsets, chunk_tokens)
    if chunker == "markdown":
        return by_headings(text, offsets, chunk_tokens, overlap)
    raise ParamError(f"Unknown chunker {chunker!r}; expected one of {', '.join(CHUNKERS)}")


def by_tokens(text: str, offsets: TokenOffsets, chunk_tokens: int, overlap: int, base: int = 0) -> list[Chunk]:
    """Windows of `chunk_tokens` tokens, each starting `chunk_tokens - overlap` tokens after the last."""
    spans = offsets(text)
    chunks = []
    step = chunk_tokens - overlap
    for first in range(0, len(spans), step):
        window = spans[first : first + chunk_tokens]
        start, end = window[0][0], window[-1][1]
        chunks.append(Chunk(text[start:end], base + start, base + end))
        if first + chunk_tokens >= len(spans):
            break
    return chunks


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: breaks after . ! ?, at blank lines and before heading lines; whitespace trimmed."""
    spans = []
    position = 0
    for match in [*SENTENCE_END.finditer(text), None]:
        end = match.start() if match else len(text)
        piece = text[position:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((position + lead, position + len(piece.rstrip())))
        if match:
            position = match.end()
    return spans


def by_sentences(text: str, offsets: TokenOffsets, chunk_tokens: int) -> list[Chunk]:
    """Whole sentences packed into chunks of at most `chunk_tokens` tokens (a longer sentence is its own chunk)."""
    chunks: list[Chunk] = []
    start = end = used = 0
    for s_start, s_end in sentence_spans(text):
        size = len(offsets(text[s_start:s_end]))
        if used and used + size > chunk_tokens:
            chunks.append(Chunk(text[start:end], start, end))
            used = 0
        if not used:
            start = s_start
        end, used = s_end, used + size
    if used:
        chunks.append(Chunk(text[start:end], start, end))
    return chunks


def by_headings(text: str, offsets: TokenOffsets, chunk_tokens: int, overlap: int) -> list[Chunk]:
    """One chunk per Markdown section (heading + body); a section over `chunk_tokens` is split by tokens.

    Each chunk's metadata has `heading`: the section's heading path ("Install > From source").
    """
    starts = [m.start() for m in HEADING.finditer(text)]
    bounds = list(zip([0, *starts], [*starts, len(text)]))
    path: list[str] = []
    chunks = []
    for start, end in bounds:
        match = HEADING.match(text, start)
        if match:
            level = len(match.group(1))
            path = [*path[: level - 1], match.group(2).strip()]
        section = text[start:end]
        if not section.strip():
            continue
        meta = {"heading": " > ".join(path)} if path else {}
        for piece in by_tokens(section, offsets, chunk_tokens, overlap, base=start):
            chunks.append(Chunk(piece.text, piece.start, piece.end, meta))
    return chunks
