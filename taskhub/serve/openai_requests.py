"""OpenAI request bodies (chat, completions, embeddings) validated, and mapped onto taskhub task parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import APIError

IGNORED = frozenset({"user", "store", "metadata", "service_tier", "parallel_tool_calls"})  # accepted, no effect
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "audio", "modalities", "prediction", "suffix")
RESERVED = frozenset(  # task params the server sets itself; a client may not
    {"stream", "return_full_text", "return_metrics", "num_return_sequences", "batch_size"}
)


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationRequest(BaseModel):
    """The fields chat and completions share; unknown fields are kept and checked as taskhub controls."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def parse(model: type[BaseModel], body: Any) -> Any:
    """`body` validated as `model`, or a 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        raise APIError(400, f"{field}: {error['msg']}", param=field, code="invalid_value") from None


def chat_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """OpenAI messages -> taskhub chat input; content parts are joined when they are all text."""
    out = []
    for i, message in enumerate(request.messages):
        content = message.content
        if isinstance(content, list):
            if any(part.get("type") != "text" for part in content):
                raise APIError(
                    400,
                    "Only text content parts are supported here; send images to /v1/tasks/image-text-to-text.",
                    param=f"messages.{i}.content",
                    code="unsupported_content",
                )
            content = "".join(str(part.get("text", "")) for part in content)
        out.append({"role": message.role, "content": content or ""})
    return out


def generation_params(request: GenerationRequest, task_params: list[str]) -> dict[str, Any]:
    """The text-generation call parameters of an OpenAI request; `task_params` are the ones the task accepts."""
    for name in UNSUPPORTED:
        if getattr(request, name, None) or (request.model_extra or {}).get(name):
            raise APIError(400, f"{name} is not supported by this server.", param=name, code="unsupported_parameter")
    params: dict[str, Any] = {}
    max_tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens
    if max_tokens is not None:
        params["max_new_tokens"] = max_tokens
    if request.temperature is not None:
        params["temperature"] = request.temperature
        params["do_sample"] = request.temperature > 0
    if request.top_p is not None:
        params["top_p"] = request.top_p
        params.setdefault("do_sample", True)
    if request.n > 1:
        params.setdefault("do_sample", True)  # n different answers need sampling (OpenAI's default temperature 1)
    for name in ("seed", "presence_penalty", "frequency_penalty"):
        if getattr(request, name) is not None:
            params[name] = getattr(request, name)
    if request.stop:
        params["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.logit_bias:
        params["logit_bias"] = _logit_bias(request.logit_bias)
    params.update(_logprobs(request))
    if request.response_format and request.response_format.get("type", "text") != "text":
        if "response_format" not in task_params:
            raise APIError(
                400,
                "response_format other than text is not supported by this server's text-generation task.",
                param="response_format",
                code="unsupported_parameter",
            )
        params["response_format"] = request.response_format
    params.update(_extras(request, params, task_params))
    return params


def _logit_bias(bias: dict[str, float]) -> dict[int, float]:
    try:
        return {int(token): float(value) for token, value in bias.items()}
    except ValueError:
        raise APIError(400, "logit_bias keys must be token ids.", param="logit_bias", code="invalid_value") from None


def _logprobs(request: GenerationRequest) -> dict[str, Any]:
    if isinstance(request, ChatRequest):
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true.", param="top_logprobs", code="invalid_value")
        return {"logprobs": request.top_logprobs or 0} if request.logprobs else {}
    if isinstance(request, CompletionRequest):
        if request.best_of not in (None, 1, request.n):
            raise APIError(400, "best_of other than n is not supported.", param="best_of", code="unsupported_parameter")
        return {"logprobs": request.logprobs} if request.logprobs is not None else {}
    return {}


def _extras(request: GenerationRequest, mapped: dict[str, Any], task_params: list[str]) -> dict[str, Any]:
    """Fields beyond OpenAI's: taskhub's own controls (top_k, min_p, repetition_penalty, num_beams, ...)."""
    allowed = sorted(set(task_params) - RESERVED)
    out = {}
    for name, value in (request.model_extra or {}).items():
        if name in IGNORED:
            continue
        if name not in allowed:
            listing = ", ".join(allowed)
            raise APIError(
                400,
                f"Unknown parameter {name!r}. Extra taskhub controls: {listing}",
                param=name,
                code="unknown_parameter",
            )
        if name in mapped:
            raise APIError(
                400, f"{name} is already set by an OpenAI field of this request.", param=name, code="invalid_value"
            )
        out[name] = value
    return out
