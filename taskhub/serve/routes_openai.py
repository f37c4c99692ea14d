"""OpenAI endpoints: /v1/chat/completions, /v1/completions (whole or streamed), /v1/embeddings, /v1/models."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..errors import TaskhubError
from ..pipeline import Pipeline
from .catalog import task_of
from .errors import APIError, from_taskhub, log
from .generation import Choice, Delta, Submission
from .openai_requests import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerationRequest,
    chat_messages,
    generation_params,
    parse,
)
from .openai_responses import ChatShape, CompletionShape, embedding_list, model_list
from .settings import ServedModel
from .state import ServerState, read_json, state_of
from .task_inputs import ResultResponse
from .worker import Deadline, DeltaStream, deadline_error, guarded


class GenerationJob:
    """One chat or completions request: its prompts decoded one after another while holding one running slot."""

    def __init__(
        self, state: ServerState, entry: ServedModel, prompts: list[Any], request: GenerationRequest, echo: bool
    ) -> None:
        self.state, self.entry, self.prompts, self.request, self.echo = state, entry, prompts, request, echo
        self.started = time.perf_counter()
        self.choices: list[Choice] = []
        self.prompt_tokens = 0
        self.pending: list[Delta] = []  # echoed prompts, sent before the prompt's first generated delta
        self.stream: DeltaStream | None = None
        self.holding = False
        self.pipe: Pipeline | None = None
        self.params: dict[str, Any] = {}
        self.next_prompt = 0

    async def start(self) -> None:
        """Wait for a slot, load the model if needed, check the parameters, start the first prompt."""
        await self.state.admission.acquire()
        self.holding = True
        self.pipe = await self.state.runner.call(self.state.catalog.pipeline, self.entry)
        self.params = generation_params(self.request, self.pipe.param_names)
        self._start_prompt()

    def _start_prompt(self) -> None:
        assert self.pipe is not None
        prompt = self.prompts[self.next_prompt]
        submission = Submission(self.pipe, prompt, self.params, self.request.n)
        self.stream = self.state.runner.start(submission)
        if self.echo:
            base = self.next_prompt * self.request.n
            self.pending += [Delta(base + j, prompt) for j in range(self.request.n)]

    async def next(self) -> Delta | Choice | None:
        """The next text Delta, a finished Choice, or None when every prompt is done."""
        while not self.pending:
            if self.stream is None:
                return None
            item = await self.stream.next()
            if item is None:
                self._finish_prompt(self.stream)
                continue
            item.index += self.next_prompt * self.request.n
            if isinstance(item, Choice):
                if self.echo:
                    item.text = self.prompts[self.next_prompt] + item.text
                self.choices.append(item)
            return item
        return self.pending.pop(0)

    def _finish_prompt(self, stream: DeltaStream) -> None:
        outcome = stream.submission.outcome()
        self.prompt_tokens += outcome.prompt_tokens
        tokens = outcome.choices[0].completion_tokens if outcome.choices else 0
        self.state.metrics.observe_generation(
            self.entry.model, self.started, stream.first_at, time.perf_counter(), tokens, outcome.decoder_tpot_s
        )
        self.state.runner.finish(stream)
        self.stream = None
        self.next_prompt += 1
        if self.next_prompt < len(self.prompts):
            self._start_prompt()

    async def drain(self) -> None:
        while await self.next() is not None:
            pass

    def close(self) -> None:
        """Stop whatever still decodes and give the slot back (idempotent)."""
        if self.stream is not None:
            self.state.metrics.cancelled.labels(self.entry.model).inc()
            self.state.runner.finish(self.stream)
            self.stream = None
        if self.holding:
            self.holding = False
            self.state.admission.release()


class GenerationEvents(EventSourceResponse):
    """The SSE response of a streamed request; the job is closed however the response ends (disconnect included)."""

    def __init__(self, job: GenerationJob, events: AsyncIterator[dict[str, Any]]) -> None:
        super().__init__(events, ping=15, shutdown_grace_period=job.state.settings.grace_s)
        self.job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.close()


async def sse_events(
    job: GenerationJob, shape: ChatShape, deadline: Deadline, first: Delta | Choice | None
) -> AsyncIterator[dict[str, Any]]:
    """Chunks as OpenAI streams them (from `first`, already read), usage last when asked for, then [DONE];
    errors as an error event."""
    try:
        item = first
        while item is not None:
            chunk = shape.finished(item) if isinstance(item, Choice) else shape.delta(item)
            yield {"data": json.dumps(chunk, ensure_ascii=False)}
            item = await asyncio.wait_for(job.next(), timeout=deadline.left())
        if shape.include_usage:
            yield {"data": json.dumps(shape.usage_chunk(job.prompt_tokens, job.choices))}
        yield {"data": "[DONE]"}
    except asyncio.TimeoutError:
        yield {"data": json.dumps(deadline_error(deadline.timeout_s).body())}
    except TaskhubError as exc:
        yield {"data": json.dumps(from_taskhub(exc).body())}
    except APIError as exc:
        yield {"data": json.dumps(exc.body())}
    except Exception as exc:  # a bug: logged with its traceback, one line to the client
        log.exception("generation failed mid-stream")
        yield {
            "data": json.dumps(APIError(500, f"Internal error ({type(exc).__name__}).", code="internal_error").body())
        }


async def run_generation(
    request: Request, job: GenerationJob, shape: ChatShape, stream: bool, deadline: Deadline
) -> Response:
    """Errors until the first token (bad values the task refuses, an unknown model, a full queue) become
    proper HTTP statuses, streams included: the SSE response starts only once the first chunk exists.
    After that a stream reports errors in-band."""
    job.state.admission.check()
    streaming = False
    try:
        await guarded(request, job.start(), deadline)
        if stream:
            first = await guarded(request, job.next(), deadline)
            streaming = True  # the response closes the job when it ends
            return GenerationEvents(job, sse_events(job, shape, deadline, first))
        await guarded(request, job.drain(), deadline)
        return ResultResponse(shape.whole(sorted(job.choices, key=lambda c: c.index), job.prompt_tokens))
    finally:
        if not streaming:
            job.close()


async def chat_completions(request: Request) -> Response:
    state = state_of(request)
    deadline = Deadline(state.settings.timeout_s)
    body = parse(ChatRequest, await read_json(request))
    entry = state.catalog.resolve(task_of(state.catalog, "text-generation"), body.model)
    job = GenerationJob(state, entry, [chat_messages(body)], body, echo=False)
    return await run_generation(request, job, ChatShape(body.model, body.include_usage), body.stream, deadline)


async def completions(request: Request) -> Response:
    state = state_of(request)
    deadline = Deadline(state.settings.timeout_s)
    body = parse(CompletionRequest, await read_json(request))
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise APIError(400, "prompt is empty.", param="prompt", code="invalid_value")
    entry = state.catalog.resolve(task_of(state.catalog, "text-generation"), body.model)
    job = GenerationJob(state, entry, prompts, body, echo=body.echo)
    return await run_generation(request, job, CompletionShape(body.model, body.include_usage), body.stream, deadline)


def _embed(pipe: Pipeline, texts: list[str]) -> tuple[list[Any], int]:
    """Vectors of `texts`, and how many tokens they were (the model's truncation applied)."""
    vectors = pipe(texts)
    tokenizer = pipe.model.tokenizer.backend_tokenizer  # read-only encode: safe while other threads tokenize
    limit = getattr(pipe.model, "max_length", None) or 1 << 30
    tokens = sum(min(len(e.ids), limit) for e in tokenizer.encode_batch(texts))
    return vectors, tokens


async def embeddings(request: Request) -> Response:
    state = state_of(request)
    deadline = Deadline(state.settings.timeout_s)
    body = parse(EmbeddingRequest, await read_json(request))
    if body.dimensions is not None:
        raise APIError(400, "dimensions is not supported: models give their own size.", param="dimensions")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise APIError(400, "input must be non-empty text (or a list of them).", param="input", code="invalid_value")
    entry = state.catalog.resolve(task_of(state.catalog, "feature-extraction"), body.model)
    async with state.admission.slot():
        pipe = await guarded(request, state.runner.call(state.catalog.pipeline, entry), deadline)
        vectors, tokens = await guarded(request, state.runner.call(_embed, pipe, texts), deadline)
    return ResultResponse(embedding_list(body.model, vectors, body.encoding_format, tokens))


async def models(request: Request) -> Response:
    state = state_of(request)
    return JSONResponse(model_list([(m.model, m.task) for m in state.catalog.listed()], state.started))
