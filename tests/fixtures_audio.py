"""Tiny random audio checkpoints (Wav2Vec2 CTC, Whisper, Wav2Vec2 and AST classifiers, VITS) and sample audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    GenerationConfig,
    VitsConfig,
    VitsModel,
    VitsTokenizer,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "audio"
SPEECH = {name: SAMPLES / name for name in ("hello.wav", "numbers.wav", "hello.flac", "hello.ogg")}
CHARS = list("abcdefghijklmnopqrstuvwxyz'")
LABELS = ["yes", "no", "up", "down", "left", "right"]
WHISPER_SPECIALS = [
    "<|startoftranscript|>",
    "<|en|>",
    "<|fr|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
WHISPER_WINDOW_S = 3  # the tiny Whisper hears 3 s windows (real ones 30 s), so hello.wav (4.3 s) is long audio


def read(name: str) -> np.ndarray:
    """A sample file as soundfile reads it (float32 mono at 16 kHz)."""
    audio, rate = sf.read(SPEECH[name], dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


def _wav2vec2_config(**extra: object) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),  # 80 samples per frame
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        initializer_range=0.5,  # large weights: frame labels vary, so transcripts are not all blank
        **extra,
    )


@pytest.fixture(scope="session")
def ctc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wav2Vec2ForCTC over a character vocabulary, its CTC tokenizer and feature extractor."""
    path = tmp_path_factory.mktemp("audio") / "wav2vec2-ctc"
    path.mkdir()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(CHARS)}}
    (path / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(path / "vocab.json"), word_delimiter_token="|").save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(path)
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(_wav2vec2_config(vocab_size=len(vocab), pad_token_id=0)).eval()
    with torch.no_grad():
        model.lm_head.bias[vocab["|"]] += 2.5  # word breaks now and then, for word timestamps
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def classifier_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wav2Vec2ForSequenceClassification with six keyword labels."""
    path = tmp_path_factory.mktemp("audio") / "wav2vec2-ks"
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}
    torch.manual_seed(0)
    config = _wav2vec2_config(num_labels=len(LABELS), classifier_proj_size=16, **labels)
    model = Wav2Vec2ForSequenceClassification(config)
    model.eval().save_pretrained(path, safe_serialization=True)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def ast_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Audio Spectrogram Transformer (AudioSet-style classifier) over 1 s of 128-bin filterbanks."""
    path = tmp_path_factory.mktemp("audio") / "ast"
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}
    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=100,  # frames (real: 1024)
        num_mel_bins=128,
        num_labels=len(LABELS),
        **labels,
    )
    torch.manual_seed(0)
    ASTForAudioClassification(config).eval().save_pretrained(path, safe_serialization=True)
    ASTFeatureExtractor(max_length=100).save_pretrained(path)
    return path


def _whisper_tokenizer() -> WhisperTokenizer:
    """Byte-level BPE trained on a few sentences, with Whisper's special tokens after it."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = ["hello world this is a short test of speech recognition", "one two three four five"] * 20
    bpe.train_from_iterator(corpus, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = WhisperTokenizer(vocab=state["vocab"], merges=merges)  # <|endoftext|> is its unk/bos/eos
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS})
    return tokenizer


@pytest.fixture(scope="session")
def whisper_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Multilingual (en, fr) Whisper with 3 s windows and a generation config shaped like openai/whisper-*."""
    path = tmp_path_factory.mktemp("audio") / "whisper"
    tokenizer = _whisper_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *WHISPER_SPECIALS]}
    eot, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=WHISPER_WINDOW_S)  # 300 frames
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=extractor.nb_max_frames // 2,
        max_target_positions=64,
        decoder_start_token_id=start,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        init_std=0.3,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=64,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        is_multilingual=True,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        forced_decoder_ids=[[1, None], [2, ids["<|transcribe|>"]]],
        suppress_tokens=[ids["<|startoflm|>"], ids["<|startofprev|>"], ids["<|nocaptions|>"]],
        begin_suppress_tokens=[eot],
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    extractor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def vits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VITS (MMS-TTS-shaped) text-to-speech model over a character vocabulary."""
    path = tmp_path_factory.mktemp("audio") / "vits"
    path.mkdir()
    vocab = {c: i for i, c in enumerate(["_", " ", *CHARS, ".", ","])}  # "_": the blank add_blank inserts
    (path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = VitsTokenizer(
        str(path / "vocab.json"), add_blank=True, normalize=True, phonemize=False, is_uroman=False, pad_token="_"
    )
    tokenizer.save_pretrained(path)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2,
        duration_predictor_num_flows=2,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=2,
        sampling_rate=16000,
    )
    torch.manual_seed(0)
    VitsModel(config).eval().save_pretrained(path, safe_serialization=True)
    return path
