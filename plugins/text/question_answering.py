"""question-answering stages: extractive spans from {"question", "context"}.

transformers v5 dropped its QuestionAnsweringPipeline; this follows the algorithm of its last v4 version
(fast-tokenizer path): long contexts become overlapping spans (`doc_stride`), start/end logits are
softmaxed over the context tokens of each span, the best (start, end) pairs up to `max_answer_len`
tokens are decoded, widened to whole words, and equal answers from several spans add their scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from taskhub import StageContext
from taskhub.errors import BadInputError, ParamError, TaskhubError

from .forward import ROWS_PER_FORWARD, forward_rows, groups_of
from .params import AnswerParams, SpanParams
from .tokenize import Encoded, describe, model_extras


@dataclass
class QASpans:
    """One question/context pair as one or more model rows, with what decoding needs per span."""

    question: str
    context: str
    rows: list[Encoded]
    p_mask: list[list[int]]  # 1 where a token cannot be part of the answer (question, special tokens)
    encodings: list[Any]  # tokenizers.Encoding per span: token -> word -> characters
    question_first: bool

    def __len__(self) -> int:
        return max(len(row) for row in self.rows)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def check_question(item: Any, index: int) -> tuple[str, str]:
    """The question and context of one input, or a BadInputError saying what is missing."""
    if not isinstance(item, dict):
        raise BadInputError(f"Input {index} is {describe(item)}; expected {{'question': str, 'context': str}}.")
    fields = []
    for key in ("question", "context"):
        value = item.get(key)
        if key not in item:
            raise BadInputError(f"Input {index} has no {key!r}; expected {{'question': str, 'context': str}}.")
        if not isinstance(value, str):
            raise BadInputError(f"Input {index}: {key!r} is {describe(value)}; expected a string.")
        if not value.strip():
            raise BadInputError(f"Input {index}: {key!r} is empty.")
        fields.append(value)
    extra = sorted(set(item) - {"question", "context"})
    if extra:
        raise BadInputError(f"Input {index} has unknown fields {extra}; expected only 'question' and 'context'.")
    return fields[0], fields[1]


def qa_spans(items: list[Any], params: SpanParams, ctx: StageContext) -> list[QASpans]:
    tokenizer = ctx.model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise TaskhubError("question-answering needs a fast tokenizer (a model with tokenizer.json)")
    max_seq_len = params.max_seq_len or min(tokenizer.model_max_length, 384)
    max_seq_len = min(max_seq_len, ctx.model.max_length)
    doc_stride = min(max_seq_len // 2, 128) if params.doc_stride is None else params.doc_stride
    if doc_stride > max_seq_len:
        raise ParamError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
    question_first = tokenizer.padding_side == "right"
    results = []
    for index, item in enumerate(items):
        question, context = check_question(item, index)
        try:
            enc = tokenizer(
                text=question if question_first else context,
                text_pair=context if question_first else question,
                truncation="only_second" if question_first else "only_first",
                max_length=max_seq_len,
                stride=doc_stride,
                return_token_type_ids=True,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
            )
        except Exception as exc:  # the question alone does not fit in max_seq_len
            raise BadInputError(
                f"Input {index}: the question is too long for max_seq_len={max_seq_len} ({exc})"
            ) from exc
        extras = model_extras(tokenizer, enc)
        rows, p_mask = [], []
        for span, ids in enumerate(enc["input_ids"]):
            rows.append(Encoded(ids, {k: enc[k][span] for k in extras}))
            mask = [int(s != 1) if question_first else 0 for s in enc.sequence_ids(span)]
            if tokenizer.cls_token_id is not None:  # kept: some models point at CLS for "no answer"
                mask = [0 if token == tokenizer.cls_token_id else m for token, m in zip(ids, mask)]
            p_mask.append(mask)
        results.append(QASpans(question, context, rows, p_mask, list(enc.encodings), question_first))
    return results


@dataclass
class SpanLogits:
    spans: QASpans
    start: list[np.ndarray]  # start logits per span: [T]
    end: list[np.ndarray]


def qa_logits(items: list[QASpans], params: BaseModel, ctx: StageContext) -> list[SpanLogits]:
    rows = [row for item in items for row in item.rows]

    def pick(out: Any, row: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(rows[i])
        return out.start_logits[row, :n].float().cpu().numpy(), out.end_logits[row, :n].float().cpu().numpy()

    grouped = groups_of([len(item.rows) for item in items], forward_rows(rows, ctx, pick, ROWS_PER_FORWARD))
    return [SpanLogits(item, [s for s, _ in g], [e for _, e in g]) for item, g in zip(items, grouped)]


def decode_spans(
    start: np.ndarray, end: np.ndarray, top_k: int, max_answer_len: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (start, end) token pairs by start_prob * end_prob, with end >= start and length <= max_answer_len."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))  # [1, T, T]
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        order = [np.argmax(flat)]
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        best = np.argpartition(-flat, top_k)[0:top_k]
        order = best[np.argsort(-flat[best])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    # as in transformers: membership is tested against nonzero()'s (row, column) index arrays together
    keep = np.isin(starts, allowed.nonzero()) & np.isin(ends, allowed.nonzero())
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends]


def select_spans(
    start: np.ndarray, end: np.ndarray, p_mask: np.ndarray, min_null_score: float, params: AnswerParams, top_k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Softmax start/end logits over the allowed tokens of one span [1, T], then decode the best pairs."""
    allowed = np.abs(p_mask - 1)  # [1, T]: 1 on context tokens (and CLS)
    blocked = allowed == 0.0
    start = np.where(blocked, -10000.0, start)
    end = np.where(blocked, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if params.handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0  # CLS is never a span of its own
    starts, ends, scores = decode_spans(start, end, top_k, params.max_answer_len, allowed)
    return starts, ends, scores, min_null_score


def _char_span(encoding: Any, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Character span of tokens s..e, widened to the words they fall in when asked and possible."""
    if align_to_words:
        try:
            start_word, end_word = encoding.token_to_word(s), encoding.token_to_word(e)
            return (
                encoding.word_to_chars(start_word, sequence_index=sequence_index)[0],
                encoding.word_to_chars(end_word, sequence_index=sequence_index)[1],
            )
        except Exception:  # tokenizers without word boundaries: keep token offsets
            pass
    return encoding.offsets[s][0], encoding.offsets[e][1]


def qa_answers(items: list[SpanLogits], params: AnswerParams, ctx: StageContext) -> list[Any]:
    """`{"score", "start", "end", "answer"}`, or a list of them when more than one answer is returned."""
    pre_top_k = params.top_k * 2 + 10 if params.align_to_words else params.top_k  # word alignment merges some
    results = []
    for item in items:
        spans = item.spans
        sequence_index = 1 if spans.question_first else 0
        min_null_score = 1000000.0
        answers: list[dict[str, Any]] = []
        for span in range(len(spans.rows)):
            starts, ends, scores, min_null_score = select_spans(
                item.start[span][None],
                item.end[span][None],
                np.array(spans.p_mask[span])[None],
                min_null_score,
                params,
                pre_top_k,
            )
            for s, e, score in zip(starts, ends, scores):
                first, last = _char_span(spans.encodings[span], int(s), int(e), sequence_index, params.align_to_words)
                text = spans.context[first:last]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": first, "end": last, "answer": text})
        if params.handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[: params.top_k]
        results.append(answers[0] if len(answers) == 1 else answers)
    return results
