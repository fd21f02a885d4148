"""Prometheus metrics of one server, in a registry of its own (several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..batching import BatchObserver

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


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

    def observer(self) -> BatchObserver:
        return BatchObserver(
            on_batch=lambda size, _seconds: self.batch_size.observe(size),
            on_cancelled=self.cancelled.inc,
            on_queue_depth=self.queue_depth.set,
        )

    def count(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stages.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
