"""Prometheus metrics and the one log line per request.

Latencies come from the scheduler's timestamps when a request ends (listener on the model
thread; prometheus-client is thread-safe). Queue depth, running requests, rejections and KV
use are read from the engine at scrape time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from r1serve.engine.protocol import Engine, FinishedRequest

log = logging.getLogger("r1serve.requests")

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_PER_TOKEN = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)


class _EngineCollector(Collector):
    """Gauges read from the engine when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.engine.stats()
        model = [self.engine.model_name]
        kv_used, kv_total = s.kv_tokens_used, s.kv_tokens_total
        gauges: list[tuple[str, str, float | None]] = [
            ("r1serve_requests_running", "Requests in the running batch.", s.running),
            ("r1serve_requests_waiting", "Requests waiting for a slot.", s.waiting),
            ("r1serve_max_running", "Most requests decoded together.", s.max_running),
            ("r1serve_max_waiting", "Most requests allowed to wait.", s.max_waiting),
            ("r1serve_kv_cache_tokens_used", "Tokens held in the KV cache.", kv_used),
            ("r1serve_kv_cache_tokens_total", "Tokens the KV cache can hold.", kv_total),
            (
                "r1serve_kv_cache_usage_ratio",
                "Share of the KV cache in use.",
                None if kv_used is None or not kv_total else kv_used / kv_total,
            ),
        ]
        for name, doc, value in gauges:
            if value is None:  # this backend cannot tell
                continue
            gauge = GaugeMetricFamily(name, doc, labels=["model"])
            gauge.add_metric(model, value)
            yield gauge
        rejected = CounterMetricFamily(
            "r1serve_requests_rejected", "Requests refused with 503: queue full.", labels=["model"]
        )
        rejected.add_metric(model, s.rejected)
        yield rejected
        hits = CounterMetricFamily(
            "r1serve_prefix_cache_hit_tokens",
            "Prompt tokens whose KV cache was reused from a shared prefix.",
            labels=["model"],
        )
        hits.add_metric(model, s.prefix_cache_hits)
        yield hits


class _Forward(Collector):
    """Another registry's metrics, scraped with these."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


class ServerMetrics:
    """All metrics of one app, in a registry of its own."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.model = engine.model_name
        r = self.registry
        labels = ["model"]
        self.ttft = Histogram(
            "r1serve_time_to_first_token_seconds",
            "Submission to first generated token.",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.tpot = Histogram(
            "r1serve_time_per_output_token_seconds",
            "Mean time between output tokens of a request.",
            labels,
            buckets=_PER_TOKEN,
            registry=r,
        )
        self.e2e = Histogram(
            "r1serve_e2e_request_latency_seconds",
            "Submission to last token.",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.queue = Histogram(
            "r1serve_queue_time_seconds",
            "Time spent waiting for a slot.",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "r1serve_prompt_tokens", "Prompt tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "r1serve_generation_tokens", "Tokens generated.", labels, registry=r
        )
        self.finished = Counter(
            "r1serve_requests_finished",
            "Requests ended, by finish reason.",
            [*labels, "finish_reason"],
            registry=r,
        )
        r.register(_EngineCollector(engine))
        # Backends with metrics of their own (the upstream engine's per-replica counters).
        for extra in getattr(engine, "metric_registries", lambda: [])():
            r.register(_Forward(extra))
        engine.add_finish_listener(self.observe)

    def observe(self, done: FinishedRequest) -> None:
        """Record one finished request and write its log line."""
        t = done.timings
        model = self.model
        end = t.finished if t.finished is not None else t.submitted
        self.e2e.labels(model).observe(end - t.submitted)
        if t.admitted is not None:
            self.queue.labels(model).observe(t.admitted - t.submitted)
        ttft = None if t.first_token is None else t.first_token - t.submitted
        tpot = None
        if t.first_token is not None and done.completion_tokens > 1:
            tpot = (end - t.first_token) / (done.completion_tokens - 1)
            self.tpot.labels(model).observe(tpot)
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
        self.prompt_tokens.labels(model).inc(done.prompt_tokens)
        self.generation_tokens.labels(model).inc(done.completion_tokens)
        self.finished.labels(model, done.reason).inc()
        log.info(
            json.dumps(
                {
                    "event": "request",
                    "id": done.request_id,
                    "model": model,
                    "finish_reason": done.reason,
                    "prompt_tokens": done.prompt_tokens,
                    "completion_tokens": done.completion_tokens,
                    "queue_s": None if t.admitted is None else round(t.admitted - t.submitted, 4),
                    "ttft_s": None if ttft is None else round(ttft, 4),
                    "tpot_s": None if tpot is None else round(tpot, 5),
                    "e2e_s": round(end - t.submitted, 4),
                }
            )
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
