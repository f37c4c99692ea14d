"""What stands before the handlers: API-key check, request-body limit, and admission (running slots + a bounded queue)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError

OPEN_PATHS = frozenset({"/health"})


class AuthMiddleware:
    """With an API key, every path but /health needs `Authorization: Bearer KEY` (constant-time compare)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.expected is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            error = APIError(
                401,
                "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Reads at most `limit` bytes of a request body; more (declared or sent) is a 413 before any handler runs."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending the body
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # afterwards: http.disconnect when the client goes away

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = APIError(413, f"Request body larger than {self.limit} bytes.", code="request_too_large")
        await error.response()(scope, receive, send)


class Admission:
    """At most `running` requests execute; at most `queue` wait; anyone else gets 429 with Retry-After."""

    def __init__(self, running: int, queue: int, retry_after_s: int) -> None:
        self.limit_running, self.limit_queue = running, queue
        self.retry_after_s = retry_after_s
        self.running = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None

    def check(self) -> None:
        """Refuse now (429) when no slot is free and the queue is full; call before a response starts."""
        if self.running >= self.limit_running and self.waiting >= self.limit_queue:
            raise APIError(
                429,
                f"Server busy: {self.running} requests running and {self.waiting} queued; retry later.",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after_s)},
            )

    async def acquire(self) -> None:
        """Wait for a running slot (counted as queue depth meanwhile); 429 when the queue is full."""
        self.check()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit_running)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        assert self._slots is not None
        self.running -= 1
        self._slots.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A running slot held for the block."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()
