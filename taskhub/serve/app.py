"""The ASGI app: routes, the middleware stack (auth, body limit, request counting), error handlers, lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import TaskhubError
from . import routes_openai, routes_tasks
from .catalog import Catalog
from .errors import APIError, api_error_handler, http_exception_handler, taskhub_error_handler, unexpected_error_handler
from .generation import engine_stats
from .guards import Admission, AuthMiddleware, BodyLimitMiddleware
from .metrics import RequestCounter, ServerMetrics
from .settings import ServeSettings
from .state import ServerState, state_of
from .worker import ClientGone, Runner

CLIENT_CLOSED = 499  # nginx's status for "client closed the request": counted in /metrics, never seen by anyone


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    return PlainTextResponse(state_of(request).metrics.exposition(), media_type="text/plain; version=0.0.4")


async def client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=CLIENT_CLOSED)


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/models", routes_openai.models, methods=["GET"]),
    Route("/v1/chat/completions", routes_openai.chat_completions, methods=["POST"]),
    Route("/v1/completions", routes_openai.completions, methods=["POST"]),
    Route("/v1/embeddings", routes_openai.embeddings, methods=["POST"]),
    Route("/v1/tasks", routes_tasks.list_tasks, methods=["GET"]),
    Route("/v1/tasks/{task}", routes_tasks.run_task, methods=["POST"]),
]


def create_app(settings: ServeSettings, preload: bool = True) -> Starlette:
    """The server's app; with `preload` every --model is loaded before the first request is accepted."""
    catalog = Catalog(settings)
    admission = Admission(settings.max_running, settings.max_queue, settings.retry_after_s)
    runner = Runner(settings.max_running)
    state = ServerState(
        settings, catalog, admission, runner, ServerMetrics(admission, lambda: engine_stats(catalog.loaded()))
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if preload:
            await runner.call(catalog.preload)
        yield
        runner.shutdown()

    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(RequestCounter, metrics=state.metrics, routes=ROUTES),
            Middleware(AuthMiddleware, api_key=settings.api_key),
            Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes),
        ],
        exception_handlers={
            APIError: api_error_handler,
            TaskhubError: taskhub_error_handler,
            HTTPException: http_exception_handler,
            ClientGone: client_gone,
            Exception: unexpected_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.server = state
    return app
