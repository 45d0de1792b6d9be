"""Prometheus metrics, named like TGI's (``tgi_request_count``, ``tgi_queue_size``, ...) so dashboards carry over."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..engine import Engine, FinishEvent

_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """One registry per server, so several apps in one process (tests) never share counters."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tgi_request_count", "Inference requests received", ["route"], registry=r)
        self.successes = Counter("tgi_request_success", "Inference requests that finished", ["route"], registry=r)
        self.failures = Counter("tgi_request_failure", "Inference requests that failed", ["route", "err"], registry=r)
        self.duration = Histogram("tgi_request_duration", "Request duration in seconds", buckets=_DURATION_BUCKETS, registry=r)
        self.queue_duration = Histogram("tgi_request_queue_duration", "Seconds waiting for a batch slot", buckets=_DURATION_BUCKETS, registry=r)
        self.inference_duration = Histogram("tgi_request_inference_duration", "Seconds from first step to last", buckets=_DURATION_BUCKETS, registry=r)
        self.input_length = Histogram("tgi_request_input_length", "Prompt tokens per request", buckets=_TOKEN_BUCKETS, registry=r)
        self.generated_tokens = Histogram("tgi_request_generated_tokens", "Generated tokens per request", buckets=_TOKEN_BUCKETS, registry=r)
        self.tokens_total = Counter("tgi_generated_tokens", "Generated tokens, all requests", registry=r)
        self.batch_size = Histogram("tgi_batch_next_size", "Rows in each decode step", buckets=_BATCH_BUCKETS, registry=r)
        self.step_duration = Histogram("tgi_batch_forward_duration", "Seconds per decode step", buckets=_DURATION_BUCKETS, registry=r)
        self.in_flight = Gauge("tgi_request_in_flight", "Requests being served now", registry=r)
        queue = Gauge("tgi_queue_size", "Requests waiting for a batch slot", registry=r)
        queue.set_function(lambda: engine.stats.queue_size)
        current = Gauge("tgi_batch_current_size", "Rows in the running batch", registry=r)
        current.set_function(lambda: engine.stats.batch_size)
        engine.step_observers.append(self._on_step)

    def _on_step(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.step_duration.observe(seconds)

    def received(self, route: str) -> None:
        self.requests.labels(route=route).inc()

    def success(self, route: str, seconds: float, finishes: Iterable[FinishEvent]) -> None:
        self.successes.labels(route=route).inc()
        self.duration.observe(seconds)
        for f in finishes:
            self.queue_duration.observe(f.queue_seconds)
            self.inference_duration.observe(f.inference_seconds)
            self.input_length.observe(f.prompt_tokens)
            self.generated_tokens.observe(f.generated_tokens)
            self.tokens_total.inc(f.generated_tokens)

    def failure(self, route: str, kind: str) -> None:
        self.failures.labels(route=route, err=kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
