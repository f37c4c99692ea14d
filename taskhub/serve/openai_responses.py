"""OpenAI response bodies: chat completions, text completions (whole and as stream chunks), embeddings, models."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import numpy as np

from .generation import Choice, Delta


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ChatShape:
    """`chat.completion` and `chat.completion.chunk` objects of one request.

    In a stream each chunk carries the logprobs of its own tokens; the last chunk of a choice
    carries those not sent yet (the EOS token's), so a stream's logprobs join to the whole reply's.
    """

    object_name = "chat.completion"

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self._started: set[int] = set()
        self._sent: dict[int, tuple[int, int]] = {}  # choice -> (logprob entries sent, their text length)

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out = {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}
        if obj.endswith(".chunk") and self.include_usage:
            out["usage"] = None  # OpenAI: every chunk carries usage, null until the last one
        return out

    def logprobs(self, entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
        return {"content": entries} if entries is not None else None

    def _stream_logprobs(self, index: int, entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        """A chunk's logprobs object, remembering how far the choice's logprobs have been sent."""
        if not entries:
            return None
        count, offset = self._sent.get(index, (0, 0))
        self._sent[index] = (count + len(entries), offset + sum(len(e["token"]) for e in entries))
        return self.logprobs(entries, offset)

    def whole(self, choices: list[Choice], prompt_tokens: int) -> dict[str, Any]:
        body = self._envelope(self.object_name, [self._choice(c) for c in choices])
        body["usage"] = usage(prompt_tokens, sum(c.completion_tokens for c in choices))
        return body

    def _choice(self, choice: Choice) -> dict[str, Any]:
        return {
            "index": choice.index,
            "message": {"role": "assistant", "content": choice.text},
            "logprobs": self.logprobs(choice.logprobs),
            "finish_reason": choice.finish_reason,
        }

    def delta(self, item: Delta) -> dict[str, Any]:
        delta: dict[str, Any] = {"content": item.text}
        if item.index not in self._started:
            self._started.add(item.index)
            delta["role"] = "assistant"
        logprobs = self._stream_logprobs(item.index, item.logprobs)
        return self._envelope(
            f"{self.object_name}.chunk",
            [{"index": item.index, "delta": delta, "logprobs": logprobs, "finish_reason": None}],
        )

    def _rest(self, choice: Choice) -> dict[str, Any] | None:
        """Logprobs of the choice's tokens that no chunk carried yet."""
        if choice.logprobs is None:
            return None
        return self._stream_logprobs(choice.index, choice.logprobs[self._sent.get(choice.index, (0, 0))[0] :])

    def finished(self, choice: Choice) -> dict[str, Any]:
        """The last chunk of a choice: its finish_reason, and the logprobs still unsent."""
        delta: dict[str, Any] = {} if choice.index in self._started else {"role": "assistant", "content": ""}
        return self._envelope(
            f"{self.object_name}.chunk",
            [
                {
                    "index": choice.index,
                    "delta": delta,
                    "logprobs": self._rest(choice),
                    "finish_reason": choice.finish_reason,
                }
            ],
        )

    def usage_chunk(self, prompt_tokens: int, choices: list[Choice]) -> dict[str, Any]:
        body = self._envelope(f"{self.object_name}.chunk", [])
        body["usage"] = usage(prompt_tokens, sum(c.completion_tokens for c in choices))
        return body


class CompletionShape(ChatShape):
    """`text_completion` objects (whole and as chunks), with the legacy logprobs layout."""

    object_name = "text_completion"

    def __init__(self, model: str, include_usage: bool = False) -> None:
        super().__init__(model, include_usage)
        self.id = f"cmpl-{uuid.uuid4().hex}"

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return super()._envelope(self.object_name, choices)  # chunks are text_completion objects too

    def logprobs(self, entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
        """The legacy layout; `offset` is where the first entry's token starts in the generated text."""
        if entries is None:
            return None
        offsets, position = [], offset
        for step in entries:
            offsets.append(position)
            position += len(step["token"])
        return {
            "tokens": [step["token"] for step in entries],
            "token_logprobs": [step["logprob"] for step in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in step["top_logprobs"]} for step in entries],
            "text_offset": offsets,
        }

    def _choice(self, choice: Choice) -> dict[str, Any]:
        return {
            "index": choice.index,
            "text": choice.text,
            "logprobs": self.logprobs(choice.logprobs),
            "finish_reason": choice.finish_reason,
        }

    def delta(self, item: Delta) -> dict[str, Any]:
        logprobs = self._stream_logprobs(item.index, item.logprobs)
        return self._envelope(
            "", [{"index": item.index, "text": item.text, "logprobs": logprobs, "finish_reason": None}]
        )

    def finished(self, choice: Choice) -> dict[str, Any]:
        return self._envelope(
            "",
            [
                {
                    "index": choice.index,
                    "text": "",
                    "logprobs": self._rest(choice),
                    "finish_reason": choice.finish_reason,
                }
            ],
        )


def embedding_list(model: str, vectors: list[Any], encoding: str, prompt_tokens: int) -> dict[str, Any]:
    """An embeddings `list`: float lists, or base64 of little-endian float32 as OpenAI sends them."""

    def encode(vector: Any) -> Any:
        array = np.asarray(vector, dtype="<f4")
        return base64.b64encode(array.tobytes()).decode("ascii") if encoding == "base64" else array.tolist()

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_list(entries: list[tuple[str, str]], created: int) -> dict[str, Any]:
    """GET /v1/models: (model name, task) pairs."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "taskhub", "task": task}
            for name, task in entries
        ],
    }
