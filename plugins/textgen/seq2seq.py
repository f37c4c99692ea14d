"""text2text-generation and translation: source texts through an encoder-decoder model, same decoding controls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from taskhub import StageContext
from taskhub.errors import BadInputError, ParamError

from .backend import PromptBatch
from .config import GenerationConfig, check_new_tokens
from .generate import generate
from .generation import Generation
from .loading import TextGenModel
from .params import OutputParams, SourceParams, TranslationParams
from .stages import record, request_config, with_format

LANGUAGES = {
    "ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "fi": "Finnish",
    "fr": "French", "hi": "Hindi", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "zh": "Chinese",
}  # fmt: skip


# A model that states no input length (T5's relative positions) still pays attention memory growing with the
# square of the source: a 100k-character source would ask for tens of GB. Its sources stop here.
UNSTATED_SOURCE_LIMIT = 4096


@dataclass
class Source:
    """One source text, tokenized for the encoder."""

    ids: list[int]
    defaults: dict[str, Any] = field(default_factory=dict)  # decoding defaults the task brings (same for a whole call)

    def __len__(self) -> int:
        return len(self.ids)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def seq2seq_model(ctx: StageContext) -> TextGenModel:
    """ctx.model, which these tasks need to be an encoder-decoder TextGenModel."""
    model = ctx.model
    if not isinstance(model, TextGenModel) or not model.is_encoder_decoder:
        raise ParamError(f"Task {ctx.task.task!r} needs an encoder-decoder model (BART, T5, Marian, Pegasus, ...).")
    return model


def task_params(model: TextGenModel, key: str) -> dict[str, Any]:
    """config.json's task_specific_params[key] (T5 and BART checkpoints carry prefixes and decoding defaults)."""
    return dict((model.config.get("task_specific_params") or {}).get(key) or {})


def check_texts(items: list[Any]) -> None:
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise BadInputError(f"Input {index} must be a non-empty string.")


def encode_sources(model: TextGenModel, texts: list[str], defaults: dict[str, Any]) -> list[Source]:
    """Encoder ids of each text, truncated to what the model takes."""
    limits = [
        model.tokenizer.model_max_length,
        model.config.get("max_position_embeddings"),
        model.config.get("n_positions"),
    ]
    limit = min((int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000), default=UNSTATED_SOURCE_LIMIT)
    encoded = model.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    return [Source(list(ids), defaults) for ids in encoded]


def source_inputs(items: list[Any], params: SourceParams, ctx: StageContext) -> list[Source]:
    """Stage `textgen.source_inputs` (text2text-generation, abstractive summarization)."""
    check_texts(items)
    model = seq2seq_model(ctx)
    defaults = task_params(model, ctx.task.task)
    prefix = params.prefix if params.prefix is not None else defaults.pop("prefix", "")
    defaults.pop("prefix", None)
    return encode_sources(model, [prefix + text for text in items], defaults)


def target_language_id(model: TextGenModel, lang: str) -> int | None:
    """Id of the target-language token multilingual models start with (mBART, M2M100, NLLB), else None."""
    tokenizer = model.tokenizer
    if hasattr(tokenizer, "get_lang_id"):
        return int(tokenizer.get_lang_id(lang))
    token_id = tokenizer.convert_tokens_to_ids(lang)
    return None if token_id is None or token_id == tokenizer.unk_token_id else int(token_id)


def translation_inputs(items: list[Any], params: TranslationParams, ctx: StageContext) -> list[Source]:
    """Stage `textgen.translation_inputs`: T5-style prefixes, or source/target language tokens of multilingual models."""
    check_texts(items)
    model = seq2seq_model(ctx)
    src, tgt = params.src_lang, params.tgt_lang
    defaults = task_params(model, f"translation_{src}_to_{tgt}") if src and tgt else {}
    prefix = params.prefix if params.prefix is not None else defaults.get("prefix")
    defaults.pop("prefix", None)
    if hasattr(model.tokenizer, "src_lang"):  # multilingual tokenizer: language codes, no prefix
        if tgt and (lang_id := target_language_id(model, tgt)) is not None:
            defaults["forced_bos_token_id"] = lang_id
        sources = encode_sources(model, [(prefix or "") + text for text in items], defaults)
        return with_source_language(model, sources, src) if src else sources
    elif prefix is None and model.config.get("model_type") in ("t5", "mt5", "umt5"):
        if not (src in LANGUAGES and tgt in LANGUAGES):
            raise ParamError(
                "T5 translates between named languages: give src_lang and tgt_lang "
                f"(one of {', '.join(sorted(LANGUAGES))}) or use a task name like translation_en_to_de."
            )
        prefix = f"translate {LANGUAGES[src]} to {LANGUAGES[tgt]}: "
    return encode_sources(model, [(prefix or "") + text for text in items], defaults)


def with_source_language(model: TextGenModel, sources: list[Source], src: str) -> list[Source]:
    """`sources` marked as written in `src`: the tokenizer's own source-language token is swapped
    for `src`'s. (Setting `tokenizer.src_lang` instead would change the tokenizer that every
    thread and call shares.)"""
    own = model.tokenizer.src_lang
    new_id = target_language_id(model, src)
    if new_id is None:
        raise ParamError(f"src_lang {src!r} is not a language code of this model's tokenizer")
    old_id = target_language_id(model, own) if own else None
    if own == src or old_id is None:
        return sources
    return [Source([new_id if t == old_id else t for t in s.ids], s.defaults) for s in sources]


def encoder_batch(model: TextGenModel, items: list[Source]) -> PromptBatch:
    """Right-padded encoder inputs and one decoder start token per row."""
    width = max(len(s.ids) for s in items)
    ids = torch.full((len(items), width), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, source in enumerate(items):
        ids[row, : len(source.ids)] = torch.tensor(source.ids, dtype=torch.long)
        mask[row, : len(source.ids)] = 1
    start = torch.full((len(items), 1), model.decoder_start_token_id, dtype=torch.long, device=model.device)
    encoder = {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device)}
    return PromptBatch(start, torch.ones_like(start), encoder)


def generate_seq2seq(items: list[Source], params: GenerationConfig, ctx: StageContext) -> list[list[Generation]]:
    """Stage `textgen.generate_seq2seq`: the sequences of every source text."""
    model = seq2seq_model(ctx)
    batch = encoder_batch(model, items)
    config = request_config(params, model, 1, items[0].defaults)
    check_new_tokens(config.max_new_tokens, model.context)  # the decoder's positions: start token + new tokens
    results = generate(model.make_backend(), batch, config, model.tokenizer)
    return [with_format(gens, config) for gens in results]


def output_as(key: str) -> Any:
    """An output stage writing each sequence's text under `key` (generated_text, translation_text, summary_text)."""

    def output(items: list[list[Generation | str]], params: OutputParams, ctx: StageContext) -> list[list[dict]]:
        return [
            [{key: g} if isinstance(g, str) else record(g, key, g.text, params.return_metrics) for g in gens]
            for gens in items
        ]

    output.__doc__ = f"Output stage: [{{{key!r}: ...}}] per input."
    return output


generated_text = output_as("generated_text")  # stage textgen.generated_text
translation_text = output_as("translation_text")  # stage textgen.translation_text
summary_text = output_as("summary_text")  # stage textgen.summary_text
