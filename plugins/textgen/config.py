"""The decoding controls of one request, named as transformers names them."""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskhub.errors import BadInputError, ParamError

# Bounds every request is held to before any model runs (named in the errors they raise).
MAX_NEW_TOKENS = 1 << 20  # beyond any context a model here supports; the model's own context is checked too
MAX_BEAMS = 64  # num_beams and num_return_sequences: each is a full row of KV cache
MAX_LOGPROBS = 20  # top-N alternatives per token (the OpenAI API's cap)
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit value
MAX_LOGIT_BIAS = 100.0  # |logit_bias value| (the OpenAI API's range)
MAX_PENALTY = 2.0  # |presence_penalty|, |frequency_penalty| (the OpenAI API's range)
MAX_LENGTH_PENALTY = 10.0  # |length_penalty|: length ** length_penalty must stay a finite float
# fields holding token ids the caller may name; each must be a row of the model's logits
TOKEN_ID_FIELDS = (
    "logit_bias",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "stop_token_ids",
)


class GenerationConfig(BaseModel):
    """Every control the decoding loop understands; defaults switch each one off.

    Sampling happens only when `do_sample=True` (transformers' rule); `temperature=0`
    with `do_sample=True` means greedy, as in the OpenAI API.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no inf/NaN penalty, bias or temperature

    max_new_tokens: int = Field(64, ge=0, le=MAX_NEW_TOKENS)
    min_new_tokens: int = Field(0, ge=0)
    do_sample: bool = False
    temperature: float = Field(1.0, ge=0.0)
    top_k: int = Field(0, ge=0, description="0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    presence_penalty: float = Field(0.0, ge=-MAX_PENALTY, le=MAX_PENALTY)
    frequency_penalty: float = Field(0.0, ge=-MAX_PENALTY, le=MAX_PENALTY)
    no_repeat_ngram_size: int = Field(0, ge=0)
    bad_words_ids: list[list[int]] | None = None
    logit_bias: dict[int, Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]] | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    suppress_tokens: list[int] | None = None
    begin_suppress_tokens: list[int] | None = None
    num_beams: int = Field(1, ge=1, le=MAX_BEAMS)
    length_penalty: float = Field(1.0, ge=-MAX_LENGTH_PENALTY, le=MAX_LENGTH_PENALTY)
    early_stopping: bool | Literal["never"] = False
    num_return_sequences: int = Field(1, ge=1, le=MAX_BEAMS)
    eos_token_id: list[int] = Field(default_factory=list)
    pad_token_id: int | None = None
    stop_token_ids: list[int] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)
    include_stop: bool = False
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="top-N alternatives per generated token")
    # structured output (constrain.py): at most one of these four
    response_format: Any = Field(
        None,
        description='{"type": "json_object"} | {"type": "json_schema", "json_schema": {"schema": ...}} | pydantic class',
    )
    regex: str | None = Field(None, description="the output matches this regex (Rust regex syntax)")
    choices: list[str] | None = Field(None, description="the output is exactly one of these strings")
    grammar: str | None = Field(None, description="the output follows this Lark (or GBNF) grammar")

    @field_validator("eos_token_id", "stop_token_ids", mode="before")
    @classmethod
    def _int_to_list(cls, value: object) -> object:
        if value is None:
            return []
        return [value] if isinstance(value, int) else value

    @field_validator("stop", mode="before")
    @classmethod
    def _str_to_list(cls, value: object) -> object:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_token_ids_not_negative(self) -> GenerationConfig:
        for name, token_id in self.named_token_ids():
            if token_id < 0:
                raise ValueError(f"{name} holds token id {token_id}; token ids are >= 0")
        return self

    @model_validator(mode="after")
    def _check_combinations(self) -> GenerationConfig:
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError("num_return_sequences has to be <= num_beams")
        if self.num_beams == 1 and not self.sampling and self.num_return_sequences > 1:
            raise ValueError("greedy decoding returns one sequence; set do_sample=True or num_beams>1")
        return self

    @model_validator(mode="after")
    def _check_output_format(self) -> GenerationConfig:
        """An invalid schema, regex or grammar is reported here, before any model is loaded."""
        if any(getattr(self, name) is not None for name in ("response_format", "regex", "choices", "grammar")):
            from .constrain import check_format, output_format

            fmt = output_format(self)
            if fmt is not None:
                check_format(fmt)
        return self

    @property
    def sampling(self) -> bool:
        """True when tokens are drawn at random rather than picked by argmax."""
        return self.do_sample and self.temperature > 0.0

    def named_token_ids(self) -> Iterator[tuple[str, int]]:
        """(field, id) for every token id the caller can name (TOKEN_ID_FIELDS)."""
        for name in TOKEN_ID_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, int):
                yield name, value
            elif isinstance(value, dict):
                yield from ((name, k) for k in value)
            else:
                for entry in value:
                    yield from ((name, t) for t in (entry if isinstance(entry, list) else [entry]))

    @property
    def finish_ids(self) -> list[int]:
        """Token ids that end a sequence: the model's EOS ids, then `stop_token_ids`."""
        return self.eos_token_id + [t for t in self.stop_token_ids if t not in self.eos_token_id]


def with_model_defaults(
    params: GenerationConfig, model_defaults: Any, prompt_len: int, task_defaults: dict[str, Any] | None = None
) -> GenerationConfig:
    """The caller's controls; for each one the caller left unset: the task's default, then the
    checkpoint's generation_config.json value, as model.generate() merges them.

    `params` may be a subclass (a stage's params); only GenerationConfig fields are read.
    `task_defaults` also carries what a model's own generate() passes regardless of its
    generation_config (e.g. BLIP's [SEP] as EOS, a target-language forced_bos_token_id).
    The checkpoint's `max_length` / `min_length` count the (decoder) prompt, so they become
    max_new_tokens / min_new_tokens minus `prompt_len`. A combination that does not validate
    is a ParamError.
    """
    given = params.model_fields_set
    from_model = model_defaults.to_diff_dict() if model_defaults is not None else {}
    defaults = {**{k: v for k, v in from_model.items() if v is not None}, **(task_defaults or {})}
    values = {name: getattr(params, name) for name in GenerationConfig.model_fields}
    values.update({name: value for name, value in defaults.items() if name in values and name not in given})
    if "max_new_tokens" not in given and "max_new_tokens" not in defaults and defaults.get("max_length"):
        values["max_new_tokens"] = max(int(defaults["max_length"]) - prompt_len, 1)
    if "min_new_tokens" not in given and "min_new_tokens" not in defaults and defaults.get("min_length"):
        values["min_new_tokens"] = max(int(defaults["min_length"]) - prompt_len, 0)
    try:
        config = GenerationConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ParamError(
            f"Invalid generation settings (call params + the model's generation_config): {problems}"
        ) from None
    warn_unused_sampling(params, config)
    return config


SAMPLING_KNOBS = ("temperature", "top_k", "top_p", "min_p", "typical_p")
_warned: set[tuple[str, ...]] = set()


def warn_unused_sampling(params: GenerationConfig, config: GenerationConfig) -> None:
    """Sampling knobs the caller set while decoding stays greedy do nothing: say so, once per set
    of knobs (transformers warns the same way)."""
    if config.do_sample:
        return
    defaults = GenerationConfig.model_fields
    unused = tuple(
        name
        for name in SAMPLING_KNOBS
        if name in params.model_fields_set and getattr(params, name) != defaults[name].default
    )
    if unused and unused not in _warned:
        _warned.add(unused)
        warnings.warn(
            f"{', '.join(unused)} only apply when sampling; they are ignored because do_sample is not true "
            "(set do_sample=True to sample)",
            UserWarning,
            stacklevel=2,
        )


# --- Validation of one request against the model it runs on ----------------------------------


def check_token_ids(config: GenerationConfig, vocab_size: int | None, given: Collection[str] = ()) -> None:
    """ParamError when a token id the caller named is not a row of the model's logits.

    eos_token_id and pad_token_id are checked when the caller set them (`given`); the
    checkpoint's own values (some say pad = -1) are the model's business.
    """
    if vocab_size is None:
        return
    named = list(config.named_token_ids())
    named += [("eos_token_id", t) for t in config.eos_token_id if "eos_token_id" in given]
    if "pad_token_id" in given and config.pad_token_id is not None:
        named.append(("pad_token_id", config.pad_token_id))
    for name, token_id in named:
        if not 0 <= token_id < vocab_size:
            raise ParamError(f"{name} holds token id {token_id}; this model's token ids are 0..{vocab_size - 1}.")


def check_new_tokens(max_new_tokens: int, context: tuple[int, str] | None) -> None:
    """ParamError when max_new_tokens alone leaves no position for even one prompt (or decoder start) token."""
    if context is not None and max_new_tokens >= context[0]:
        positions, key = context
        raise ParamError(
            f"max_new_tokens={max_new_tokens} does not fit this model's context of {positions} positions ({key}) "
            f"with a prompt; use max_new_tokens <= {positions - 1}."
        )


def fit_prompts(
    prompts: list[list[int]], max_new_tokens: int, context: tuple[int, str] | None, truncation: str | None
) -> list[list[int]]:
    """Prompts that leave room for max_new_tokens within the model's context (positions, config key).

    Too long a prompt is a BadInputError naming the input, unless truncation="left" keeps its end.
    """
    if context is None:
        return prompts
    check_new_tokens(max_new_tokens, context)
    positions, key = context
    room = positions - max_new_tokens
    out = []
    for index, ids in enumerate(prompts):
        if len(ids) > room and truncation != "left":
            raise BadInputError(
                f"Input {index}: a prompt of {len(ids)} tokens + max_new_tokens={max_new_tokens} exceeds this model's "
                f"context of {positions} positions ({key}). Shorten the prompt, lower max_new_tokens, or pass "
                f'truncation="left" to keep the last {room} prompt tokens.'
            )
        out.append(ids[-room:] if len(ids) > room else ids)
    return out


def check_memory(rows: int, prompt_len: int, max_new_tokens: int, kv_bytes_per_token: int, budget: int) -> None:
    """ParamError when one batch's KV cache and prefill mask would exceed `budget` bytes (so a 100k-token
    prompt is refused up front instead of asking for tens of GB)."""
    total = prompt_len + max_new_tokens
    # KV cache, plus the prefill's [T, S] attention mask counted as fp32 (transformers' SDPA path builds
    # a float mask; the native path's boolean masks and intermediates come to about as much)
    need = rows * total * kv_bytes_per_token + rows * prompt_len * total * 4
    if need > budget:
        gib = 2**30
        raise ParamError(
            f"This request needs about {need / gib:.1f} GiB ({rows} rows x {total} tokens of KV cache); the limit is "
            f"{budget / gib:.1f} GiB (TASKHUB_MAX_GENERATION_BYTES). Lower max_new_tokens, num_beams, "
            "num_return_sequences, the batch size or the prompt length."
        )
