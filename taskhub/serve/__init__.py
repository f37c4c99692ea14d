"""`taskhub serve`: an OpenAI-compatible HTTP server over every taskhub task (install the `serve` extra).

Importing this package is cheap and needs no server packages; `create_app` and `serve` load
Starlette and uvicorn when first used, and say how to install them when they are missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TaskhubError
from .settings import ServedModel, ServeSettings, settings_from_args

if TYPE_CHECKING:
    from .app import create_app
    from .server import serve

__all__ = ["ServeSettings", "ServedModel", "create_app", "serve", "settings_from_args"]


def __getattr__(name: str) -> Any:
    if name not in ("create_app", "serve"):
        raise AttributeError(name)
    try:
        from . import app, server
    except ImportError as exc:
        raise TaskhubError(f'taskhub serve needs the serve extra: pip install "taskhub[serve]" ({exc})') from None
    return {"create_app": app.create_app, "serve": server.serve}[name]
