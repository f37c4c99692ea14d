"""Prometheus metrics of one server: requests by status, TTFT / TPOT, queue depth, running requests, engine cache."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5)


class LiveGauges(Collector):
    """Values read when scraped: queue depth and running requests, and the engine's cache stats when it has any."""

    def __init__(self, admission: Any, engine_stats: Callable[[], list[dict[str, Any]]]) -> None:
        self.admission = admission
        self.engine_stats = engine_stats

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "taskhub_queue_depth", "Requests waiting for a running slot", value=self.admission.waiting
        )
        yield GaugeMetricFamily("taskhub_running_requests", "Requests executing now", value=self.admission.running)
        stats = self.engine_stats()
        blocks = [(s["model"], s["kv_blocks_used"]) for s in stats if "kv_blocks_used" in s]
        if blocks:
            family = GaugeMetricFamily("taskhub_kv_blocks_used", "Paged KV-cache blocks in use", labels=["model"])
            for model, value in blocks:
                family.add_metric([model], value)
            yield family
        rates = [(s["model"], s["prefix_hit_rate"]) for s in stats if "prefix_hit_rate" in s]
        if rates:
            family = GaugeMetricFamily(
                "taskhub_prefix_cache_hit_rate", "Prompt tokens served from the prefix cache", labels=["model"]
            )
            for model, value in rates:
                family.add_metric([model], value)
            yield family


class ServerMetrics:
    """One registry per app, so several servers (tests) in a process do not share counters."""

    def __init__(self, admission: Any, engine_stats: Callable[[], list[dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "taskhub_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.cancelled = Counter(
            "taskhub_cancelled_generations",
            "Generations stopped before their end (client gone, timeout, shutdown)",
            ["model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "taskhub_time_to_first_token_seconds",
            "Request arrival to first generated token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "taskhub_time_per_output_token_seconds",
            "Mean time between generated tokens of a request after the first",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.decoder_tpot = Histogram(
            "taskhub_decoder_time_per_output_token_seconds",
            "The same, timed inside the decoder at each step (the served TPOT minus this is the server's own cost)",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(LiveGauges(admission, engine_stats))

    def observe_generation(
        self, model: str, started: float, first: float | None, end: float, tokens: int, decoder_tpot: float | None
    ) -> None:
        """Record one finished generation: `started` = arrival, `first` = first token, `end` = last token
        (all as the event loop saw them); `decoder_tpot` as the decoder timed it."""
        if first is None:
            return
        self.ttft.labels(model).observe(first - started)
        if tokens > 1:
            self.tpot.labels(model).observe((end - first) / (tokens - 1))
            if decoder_tpot is not None:
                self.decoder_tpot.labels(model).observe(decoder_tpot)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
    """ASGI middleware counting every response by its route template (not the raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: Iterable[Any]) -> None:
        self.app, self.metrics, self.routes = app, metrics, list(routes)

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            if route.matches(scope)[0] == Match.FULL:
                return str(route.path)
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False

        async def record(message: Message) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:  # counted before the client sees it
                counted = True
                self.metrics.requests.labels(self._route(scope), str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            if not counted:  # an unhandled error: the outer error middleware answers 500
                self.metrics.requests.labels(self._route(scope), "500").inc()
