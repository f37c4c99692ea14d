"""Model loader of the text plugin: a tokenizer plus a transformers model with the task's head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import transformers
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource

HEADS = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
}


@dataclass
class TextModel:
    """What text stages find in ctx.model."""

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel

    @property
    def max_length(self) -> int:
        """Longest input the model takes, in tokens."""
        limits = [self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", None)]
        return min(int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000)


def load_text_model(source: ModelSource) -> TextModel:
    """Tokenizer + model; `options.head` picks the head (default: the bare encoder)."""
    head = source.options.get("head", "base")
    if head not in HEADS:
        raise ModelNotAvailableError(f"Unknown text model head {head!r}; expected one of {', '.join(HEADS)}")
    auto_class: Any = getattr(transformers, HEADS[head])
    tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=source.trust_remote_code)
    kwargs: dict[str, Any] = {"trust_remote_code": source.trust_remote_code, "use_safetensors": not source.allow_pickle}
    if source.allow_pickle:
        kwargs.pop("use_safetensors")
    if source.dtype is not None:
        kwargs["dtype"] = source.dtype
    model = auto_class.from_pretrained(source.path, **kwargs).to(source.device).eval()
    return TextModel(tokenizer, model)
