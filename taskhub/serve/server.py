"""Run the app under uvicorn: SIGTERM stops accepting, lets in-flight requests finish for the grace period, then cancels."""

from __future__ import annotations

import uvicorn

from .app import create_app
from .settings import ServeSettings


def serve(settings: ServeSettings) -> None:
    """Blocks until the server is stopped (SIGINT / SIGTERM)."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(max(settings.grace_s, 1)),
        log_level="info",
    )
    uvicorn.Server(config).run()
