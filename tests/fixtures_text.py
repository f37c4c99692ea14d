"""Tiny random BERT checkpoints for the text tasks, sharing one WordPiece tokenizer trained here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    PreTrainedTokenizerFast,
)

CONTEXT = 64  # tokens: the tiny models' context, so long-input paths run on short texts
CORPUS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "The European Union was founded in Maastricht, a city in the Netherlands.",
    "Sarah works at Google in London and visits New York every spring.",
    "My name is Wolfgang and I live in Berlin with my cat.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "This movie was wonderful, the actors were great and the story moved me.",
    "The food was cold, the service slow, and I will not come back.",
    "Scientists at the University of Cambridge discovered a new kind of bacteria.",
    "The weather today is sunny with a light breeze from the west.",
    "Barack Obama was born in Hawaii and served as president of the United States.",
    "Mount Everest is the highest mountain on Earth, on the border of Nepal and China.",
    "Apple released a new phone; critics praised the camera but not the battery.",
    "What is the capital of France? Paris is the capital and largest city of France.",
    "Unbelievably, the underdogs won the championship after overtime.",
    "He plays football on Sundays and reads history books in the evening.",
]
LABELS_NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def train_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """A cased WordPiece tokenizer (BERT pre-tokenization, [CLS] a [SEP] b [SEP] template), saved at `path`."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=CONTEXT,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def bert_config(tokenizer: PreTrainedTokenizerFast, **kwargs: object) -> BertConfig:
    """2 layers, width 32; a wide init so that labels are decided by clear margins, not float noise."""
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=CONTEXT,
        initializer_range=0.3,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def _labelled(labels: list[str]) -> dict[str, object]:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


BUILDERS = {
    "encoder": (BertModel, {}),
    "classifier": (BertForSequenceClassification, _labelled(["negative", "neutral", "positive"])),
    "scorer": (BertForSequenceClassification, _labelled(["relevance"])),
    "ner": (BertForTokenClassification, _labelled(LABELS_NER)),
    "nli": (BertForSequenceClassification, _labelled(["contradiction", "neutral", "entailment"])),
    "mlm": (BertForMaskedLM, {}),
    "qa": (BertForQuestionAnswering, {}),
}


@pytest.fixture(scope="session")
def text_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directory of each tiny checkpoint by role: encoder, classifier, scorer, ner, nli, mlm, qa."""
    root = tmp_path_factory.mktemp("text-models")
    tokenizer = train_tokenizer(root / "tokenizer")
    paths = {}
    for seed, (name, (model_class, extra)) in enumerate(BUILDERS.items()):
        torch.manual_seed(seed)
        model = model_class(bert_config(tokenizer, **extra)).eval()
        paths[name] = root / name
        model.save_pretrained(paths[name], safe_serialization=True)
        tokenizer.save_pretrained(paths[name])
    return paths
