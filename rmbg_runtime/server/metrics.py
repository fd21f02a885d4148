"""Prometheus metrics of one server, in a registry of its own (several apps can share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..batching import BatchObserver

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
OTHER_ENDPOINT = "other"  # every path that is no route: one label, so clients cannot grow /metrics


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "rmbg_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=registry
        )
        self.latency = Histogram(
            "rmbg_request_seconds", "Request latency by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.stages = Histogram(
            "rmbg_stage_seconds", "Time per image in each pipeline stage", ["stage"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "rmbg_batch_size", "Images per backend call", buckets=BATCH_BUCKETS, registry=registry
        )
        self.queue_depth = Gauge("rmbg_queue_depth", "Images waiting for inference", registry=registry)
        self.in_flight = Gauge("rmbg_images_in_flight", "Requests admitted, not answered", registry=registry)
        self.cancelled = Counter(
            "rmbg_cancelled_images", "Images dropped before inference", registry=registry
        )
        self.abandoned = Counter(
            "rmbg_abandoned_images",
            "Images whose request timed out or whose client left, by the CPU stage that was skipped",
            ["stage"], registry=registry,
        )  # fmt: skip

    def observer(self) -> BatchObserver:
        return BatchObserver(
            on_batch=lambda size, _seconds: self.batch_size.observe(size),
            on_cancelled=self.cancelled.inc,
            on_queue_depth=self.queue_depth.set,
        )

    def count(self, endpoint: str, status: int, seconds: float) -> None:
        """`endpoint` must come from a bounded set (a route, or OTHER_ENDPOINT), never a raw path."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stages.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CountRequests:
    """ASGI middleware: every response counted by route and status, with its latency, whichever
    layer answered (FastAPI's own 422 and 404, the body and key guards, a 499 never sent)."""

    def __init__(self, app, metrics: Metrics, routes: Callable[[], frozenset[str]]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500  # 500: the app raised before answering

        async def send_counted(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            path = scope["path"]
            endpoint = path if path in self.routes() else OTHER_ENDPOINT
            self.metrics.count(endpoint, status, time.perf_counter() - start)
