"""summarization: abstractive with an encoder-decoder model, extractive (LexRank) with a sentence encoder."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from taskhub_text.api import TextModel, embed, encode_texts, load_text_model

from taskhub import StageContext
from taskhub.errors import ModelNotAvailableError, ParamError
from taskhub.models import ModelSource

from .config import GenerationConfig
from .generation import Generation
from .loading import TextGenModel, load_generative_lm
from .params import DEFAULT_SENTENCES, SummarizeParams
from .seq2seq import Source, SourceParams, check_texts, generate_seq2seq, source_inputs

SENTENCE_BREAK = re.compile(r"(?<=[.!?。！？])\s+|\s*\n\s*")


def load_summarizer(source: ModelSource) -> TextGenModel | TextModel:
    """An encoder-decoder model (abstractive) or a sentence encoder such as MiniLM (extractive)."""
    try:
        config = json.loads((Path(source.path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"{source.path} has no readable config.json: {exc}") from exc
    if config.get("is_encoder_decoder"):
        return load_generative_lm(source)
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or []):
        raise ModelNotAvailableError(
            "summarization takes an encoder-decoder model (BART, T5, Pegasus, ...) for abstractive summaries "
            "or a sentence encoder (the default MiniLM) for extractive ones, not a decoder-only model."
        )
    return load_text_model(source)


@dataclass
class Document:
    """A text split into sentences, for extractive summarization."""

    sentences: list[str]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sentences)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def split_sentences(text: str) -> list[str]:
    """Sentences at . ! ? (and their CJK forms) followed by space, and at line breaks."""
    return [s.strip() for s in SENTENCE_BREAK.split(text) if s.strip()]


def summary_inputs(items: list[Any], params: SourceParams, ctx: StageContext) -> list[Source | Document]:
    """Stage `textgen.summary_inputs`: encoder ids (abstractive) or sentences (extractive)."""
    if isinstance(ctx.model, TextGenModel):
        return source_inputs(items, params, ctx)
    check_texts(items)
    return [Document(split_sentences(text)) for text in items]


def centrality(vectors: torch.Tensor, damping: float = 0.85, iterations: int = 200, tol: float = 1e-8) -> torch.Tensor:
    """LexRank: PageRank over the cosine-similarity graph of L2-normalised sentence vectors [N, H] -> [N]."""
    n = vectors.shape[0]
    sim = (vectors @ vectors.T).clamp(min=0.0)  # [N, N]
    sim.fill_diagonal_(0.0)
    totals = sim.sum(dim=1, keepdim=True)
    transition = torch.where(totals > 0, sim / totals.clamp(min=1e-12), torch.full_like(sim, 1.0 / n))
    scores = torch.full((n,), 1.0 / n, dtype=vectors.dtype)
    for _ in range(iterations):
        updated = (1 - damping) / n + damping * (transition.T @ scores)
        if torch.abs(updated - scores).sum() < tol:
            return updated
        scores = updated
    return scores


def sentences_to_keep(count: int, params: SummarizeParams) -> int:
    if params.ratio is not None:
        return max(1, round(params.ratio * count))
    return min(count, params.num_sentences or DEFAULT_SENTENCES)


def extract(documents: list[Document], params: SummarizeParams, ctx: StageContext) -> list[str]:
    """The most central sentences of each document, in their original order."""
    flat = [s for doc in documents for s in doc.sentences]
    vectors = embed(encode_texts(flat, ctx.model), ctx, "mean") if flat else torch.empty(0)
    vectors = torch.nn.functional.normalize(vectors.float(), dim=-1) if flat else vectors
    out, start = [], 0
    for doc in documents:
        n = len(doc.sentences)
        scores = centrality(vectors[start : start + n]) if n > 1 else torch.ones(n)
        start += n
        keep = sorted(torch.topk(scores, sentences_to_keep(n, params)).indices.tolist()) if n else []
        out.append(" ".join(doc.sentences[i] for i in keep))
    return out


def summarize(items: list[Any], params: SummarizeParams, ctx: StageContext) -> list[list[Generation | str]]:
    """Stage `textgen.summarize`: generated summaries, or extracted ones with a sentence encoder."""
    if isinstance(ctx.model, TextGenModel):
        if params.num_sentences is not None or params.ratio is not None:
            raise ParamError("num_sentences and ratio apply to extractive summaries (a sentence-encoder model).")
        return list(generate_seq2seq(items, params, ctx))
    decoding = sorted(params.model_fields_set & set(GenerationConfig.model_fields))
    if decoding:
        raise ParamError(
            f"{', '.join(decoding)}: decoding controls apply to generated summaries (an encoder-decoder model); "
            "the extractive summarizer takes num_sentences or ratio"
        )
    return [[summary] for summary in extract(items, params, ctx)]
