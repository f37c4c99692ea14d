"""A real uvicorn server on a random localhost port, running in a thread, for the HTTP tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from taskhub.serve import ServeSettings, create_app


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:<port>
    app: Any  # the Starlette app (its state: admission, runner, metrics)

    def metric(self, sample: str) -> float:
        """One sample as /metrics writes it (`name{label="value",...}`), read from the app's registry; 0 if absent."""
        text = self.app.state.server.metrics.exposition().decode()
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextmanager
def running_server(settings: ServeSettings) -> Iterator[LiveServer]:
    """Start the app on 127.0.0.1:<free port>; yields its base URL; stops it (as SIGTERM would) afterwards."""
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
