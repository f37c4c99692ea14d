"""The decoding controls of one request, named as transformers names them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskhub.errors import ParamError


class GenerationConfig(BaseModel):
    """Every control the decoding loop understands; defaults switch each one off.

    Sampling happens only when `do_sample=True` (transformers' rule); `temperature=0`
    with `do_sample=True` means greedy, as in the OpenAI API.
    """

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=0)
    min_new_tokens: int = Field(0, ge=0)
    do_sample: bool = False
    temperature: float = Field(1.0, ge=0.0)
    top_k: int = Field(0, ge=0, description="0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = Field(0, ge=0)
    bad_words_ids: list[list[int]] | None = None
    logit_bias: dict[int, float] | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    suppress_tokens: list[int] | None = None
    begin_suppress_tokens: list[int] | None = None
    num_beams: int = Field(1, ge=1)
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    num_return_sequences: int = Field(1, ge=1)
    eos_token_id: list[int] = Field(default_factory=list)
    pad_token_id: int | None = None
    stop_token_ids: list[int] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)
    include_stop: bool = False
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, description="top-N alternatives per generated token")
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
        return GenerationConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ParamError(
            f"Invalid generation settings (call params + the model's generation_config): {problems}"
        ) from None
