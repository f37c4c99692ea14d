"""Stop strings and streaming detokenization: text deltas that are final when emitted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT_CHAR = "\ufffd"


def find_stop(text: str, stops: list[str]) -> tuple[int, int] | None:
    """(start, end) of the stop string occurrence that completes first in `text`, else None.

    "Completes first" (smallest end, then smallest start) is the occurrence that stopped
    generation token by token, so cutting a whole text agrees with cutting a stream.
    """
    best: tuple[int, int] | None = None
    for stop in stops:
        start = text.find(stop)
        if start >= 0:
            span = (start, start + len(stop))
            if best is None or (span[1], span[0]) < (best[1], best[0]):
                best = span
    return best


def cut_at_stop(text: str, stops: list[str], include_stop: bool) -> tuple[str, bool]:
    """`text` up to the first stop string (kept when include_stop) and whether one was found."""
    span = find_stop(text, stops)
    if span is None:
        return text, False
    return text[: span[1] if include_stop else span[0]], True


def held_suffix_len(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class IncrementalDetokenizer:
    """Token ids in, text deltas out; never emits half of a multi-byte character.

    Byte-level BPE splits a character over several tokens; decoding such a prefix ends in
    U+FFFD, so the text is held until the next token completes it. Decoding restarts a few
    tokens back (prefix_offset) so that tokenizers which drop a leading space of the first
    decoded token still produce the right spacing; `context` (the prompt's last tokens) does the
    same for the first generated token.
    """

    def __init__(self, tokenizer: Any, context: Sequence[int] = (), skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = list(context)  # prompt tokens give the first new token its spacing
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one token; the text that became final (may be empty)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHAR):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Whatever is still held (an incomplete character at the very end decodes as U+FFFD)."""
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]


class StopFilter:
    """Text deltas in, deltas out: cut at the first stop string, hold what a stop may still remove."""

    def __init__(self, stops: list[str], include_stop: bool) -> None:
        self.stops = stops
        self.include_stop = include_stop
        self.held = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        """The part of held text + delta that no stop string can remove any more."""
        if self.stopped:
            return ""
        text = self.held + delta
        span = find_stop(text, self.stops)
        if span is not None:
            self.stopped, self.held = True, ""
            return text[: span[1] if self.include_stop else span[0]]
        keep = held_suffix_len(text, self.stops)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """At the end of generation, the held text is final."""
        text, self.held = self.held, ""
        return "" if self.stopped else text


class TextDelta(str):
    """A streamed text delta that also carries the logprob records of the tokens it covers.

    A str, so every reader of text deltas keeps working; readers that want per-chunk logprobs
    (the OpenAI server) read `records`: one {token_id, logprob, top_logprobs} per token, in order.
    """

    records: list[dict[str, Any]]


class TextStream:
    """One row's streamed text: detokenizer followed by the stop filter.

    Tokens may be pushed with their logprob record; `take()` then returns a TextDelta whose
    records are those of the tokens pushed since the last non-empty delta (text a token could not
    finish yet, held bytes or a possible stop string, carries its record on to the next delta).
    """

    def __init__(self, tokenizer: Any, stops: list[str], include_stop: bool, context: Sequence[int] = ()) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer, context)
        self.filter = StopFilter(stops, include_stop)
        self.pending: list[str] = []
        self.records: list[dict[str, Any]] | None = None  # set on the first push with a record

    @property
    def stopped(self) -> bool:
        """A stop string has been seen."""
        return self.filter.stopped

    def push(self, token_id: int, record: dict[str, Any] | None = None) -> None:
        """Add a generated token (and its logprob record); its final text (if any) is queued for `take`."""
        if record is not None:
            if self.records is None:
                self.records = []
            self.records.append(record)
        delta = self.filter.push(self.detokenizer.push(token_id))
        if delta:
            self.pending.append(delta)

    def finish(self) -> None:
        """Generation ended: release held text."""
        delta = self.filter.push(self.detokenizer.flush()) + self.filter.flush()
        if delta:
            self.pending.append(delta)

    def take(self) -> str:
        """Text queued since the last call; a TextDelta with its tokens' records when tokens came with records."""
        text = "".join(self.pending)
        self.pending.clear()
        if not text or self.records is None:
            return text
        delta = TextDelta(text)
        delta.records, self.records = self.records, []
        return delta


def tail_has_stop(tokenizer: Any, generated: list[int], stops: list[str]) -> bool:
    """Whether the end of `generated` decodes to text holding a stop string.

    Only the last few tokens are decoded (enough bytes for the longest stop string); callers
    check after every token, so an occurrence found here has just been completed.
    """
    window = generated[-(4 * max(len(s) for s in stops) + 4) :]
    return find_stop(tokenizer.decode(window, skip_special_tokens=True), stops) is not None
