"""Model loaders of the audio plugin: speech recognition (CTC or Whisper), audio classification, text-to-speech."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForSpeechSeq2Seq,
    AutoModelForTextToWaveform,
    AutoTokenizer,
    PreTrainedModel,
)

from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource

Kind = Literal["ctc", "whisper", "classifier", "tts"]


@dataclass
class AudioModel:
    """What audio stages find in ctx.model."""

    model: PreTrainedModel
    kind: Kind
    feature_extractor: Any = None  # SequenceFeatureExtractor (None for text-to-speech)
    tokenizer: Any = None  # None for classifiers

    @property
    def sampling_rate(self) -> int:
        """The rate the model hears (its feature extractor's) or speaks (its config's)."""
        if self.feature_extractor is not None:
            return int(self.feature_extractor.sampling_rate)
        return int(self.model.config.sampling_rate)

    @property
    def samples_per_frame(self) -> int:
        """Input samples per output frame (CTC logits); 1 where the model has no such ratio."""
        return int(getattr(self.model.config, "inputs_to_logits_ratio", 1))


def _load(auto_class: Any, source: ModelSource) -> PreTrainedModel:
    return auto_class.from_pretrained(source.path, **source.from_pretrained_kwargs()).to(source.device).eval()


def _feature_extractor(source: ModelSource) -> Any:
    return AutoFeatureExtractor.from_pretrained(source.path, trust_remote_code=source.trust_remote_code)


def _tokenizer(source: ModelSource) -> Any:
    return AutoTokenizer.from_pretrained(source.path, trust_remote_code=source.trust_remote_code)


def load_speech_recognizer(source: ModelSource) -> AudioModel:
    """A Whisper model (decoded by the textgen plugin) or any CTC model (Wav2Vec2, HuBERT, ...)."""
    config = AutoConfig.from_pretrained(source.path, trust_remote_code=source.trust_remote_code)
    if config.model_type == "whisper":
        model, kind = _load(AutoModelForSpeechSeq2Seq, source), "whisper"
    elif getattr(config, "is_encoder_decoder", False):
        raise ModelNotAvailableError(
            f"Model {source.model_id!r} is a {config.model_type} sequence-to-sequence model; "
            "automatic-speech-recognition takes CTC models (Wav2Vec2, HuBERT, ...) and Whisper."
        )
    else:
        model, kind = _load(AutoModelForCTC, source), "ctc"
    return AudioModel(model, kind, _feature_extractor(source), _tokenizer(source))


def load_audio_classifier(source: ModelSource) -> AudioModel:
    """An audio classification head (Wav2Vec2, HuBERT, AST, ...) with its feature extractor."""
    return AudioModel(_load(AutoModelForAudioClassification, source), "classifier", _feature_extractor(source))


def load_text_to_waveform(source: ModelSource) -> AudioModel:
    """A forward-only text-to-waveform model (VITS / MMS-TTS) with its tokenizer."""
    model = _load(AutoModelForTextToWaveform, source)
    if getattr(model.config, "sampling_rate", None) is None:
        raise ModelNotAvailableError(f"Model {source.model_id!r} has no sampling_rate in its config.")
    return AudioModel(model, "tts", tokenizer=_tokenizer(source))
