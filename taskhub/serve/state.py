"""The parts of one running server that every handler shares."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from .catalog import Catalog
from .errors import APIError
from .guards import Admission
from .metrics import ServerMetrics
from .settings import ServeSettings
from .worker import Runner


@dataclass
class ServerState:
    settings: ServeSettings
    catalog: Catalog
    admission: Admission
    runner: Runner
    metrics: ServerMetrics
    started: int = field(default_factory=lambda: int(time.time()))


def state_of(request: Request) -> ServerState:
    return request.app.state.server


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a 400 saying it is not."""
    body = await request.body()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise APIError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
