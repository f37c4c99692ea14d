"""Model loader of the text plugin: a tokenizer plus a transformers model with the task's head."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from taskhub.cpu_kernels import linear_options
from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource

from .calibration import linear_input_maxima
from .encoder import BertEncoder

HEADS = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
}


class SharedTokenizer:
    """A tokenizer that many threads share. HF fast tokenizers write each call's truncation and
    padding settings into the one Rust tokenizer before encoding, so two calls with different
    `max_length` would see each other's settings; encoding calls here go one at a time."""

    ENCODERS = frozenset({"encode", "encode_plus", "batch_encode_plus"})

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._wrapped = tokenizer
        self._encode_lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._encode_lock:
            return self._wrapped(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._wrapped, name)
        if name not in self.ENCODERS:
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._encode_lock:
                return value(*args, **kwargs)

        return locked


@dataclass
class TextModel:
    """What text stages find in ctx.model."""

    tokenizer: Any  # a SharedTokenizer around the checkpoint's PreTrainedTokenizerBase
    model: PreTrainedModel
    max_seq_length: int | None = None  # sentence-transformers' limit (sentence_bert_config.json), if any
    lowercase: bool = False  # sentence-transformers' do_lower_case: lowercase texts before tokenizing
    encoder: BertEncoder | None = None  # faster same-math encoder for bare BERT models (feature-extraction)

    @property
    def max_length(self) -> int:
        """Longest input the model takes, in tokens (sentence-transformers' own limit when it ships one)."""
        limits = [
            self.tokenizer.model_max_length,
            getattr(self.model.config, "max_position_embeddings", None),
            self.max_seq_length,
        ]
        return min(int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0


def sentence_transformers_config(path: Path) -> dict[str, Any]:
    """sentence_bert_config.json of a sentence-transformers checkpoint, or {} for plain checkpoints."""
    config = path / "sentence_bert_config.json"
    if not config.is_file():
        return {}
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"{config} is not valid JSON: {exc}") from exc


def load_text_model(source: ModelSource) -> TextModel:
    """Tokenizer + model; `options.head` picks the head (default: the bare encoder).

    A bare BERT model also gets the fused `BertEncoder` unless `options.fused_encoder` is false;
    `options.kernel` forces its linear kernel (default: the fastest measured here),
    `options.quantize: int8` runs its linears in dynamic int8, calibrated on calibration.SENTENCES
    (CPU, bare BERT models only), and `options.matmul_precision: highest` keeps its fp32 linears off the
    AMX bf16x3 kernel (default "high").
    """
    head = source.options.get("head", "base")
    if head not in HEADS:
        raise ModelNotAvailableError(f"Unknown text model head {head!r}; expected one of {', '.join(HEADS)}")
    auto_class: Any = getattr(transformers, HEADS[head])
    tokenizer = AutoTokenizer.from_pretrained(source.path, **source.from_pretrained_kwargs(weights=False))
    model = auto_class.from_pretrained(source.path, **source.from_pretrained_kwargs()).to(source.device).eval()
    st_config = sentence_transformers_config(Path(source.path))
    fused = head == "base" and source.options.get("fused_encoder", True) and BertEncoder.supports(model)
    options = linear_options(source, fused)
    text_model = TextModel(
        SharedTokenizer(tokenizer),
        model,
        max_seq_length=st_config.get("max_seq_length"),
        lowercase=bool(st_config.get("do_lower_case", False)),
    )
    if fused:
        maxima = linear_input_maxima(model, tokenizer, text_model.max_length) if options.quantize == "int8" else None
        text_model.encoder = BertEncoder(model, options.kernel, maxima, options.precision).eval()
    return text_model
