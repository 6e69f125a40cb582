"""Prometheus metrics and the one log line per request.

Latencies come from the scheduler's timestamps when a request ends (listener on the model
thread; prometheus-client is thread-safe). Queue depth, running requests, rejections and KV
use are read from the engine at scrape time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from r1serve.engine.protocol import Engine, FinishedRequest

log = logging.getLogger("r1serve.requests")

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_PER_TOKEN = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)


class _EngineCollector(Collector):
    """Gauges read from the engines when Prometheus scrapes: one sample per served model."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        self.engines = engines

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for engine in self.engines:
            for name, doc, kind, value in _engine_samples(engine):
                if name not in families:
                    families[name] = kind(name, doc, labels=["model"])
                families[name].add_metric([engine.model_name], value)
        yield from families.values()


def _engine_samples(engine: Engine) -> Iterator[tuple[str, str, type[Any], float]]:
    """(name, help, family type, value) of each figure the engine can tell."""
    s = engine.stats()
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
        if value is not None:  # None: this backend cannot tell
            yield name, doc, GaugeMetricFamily, value
    yield (
        "r1serve_requests_rejected",
        "Requests refused with 503: queue full.",
        CounterMetricFamily,
        s.rejected,
    )
    yield (
        "r1serve_prefix_cache_hit_tokens",
        "Prompt tokens whose KV cache was reused from a shared prefix.",
        CounterMetricFamily,
        s.prefix_cache_hits,
    )


class _Forward(Collector):
    """Other registries' metrics, scraped with these; families of the same name (two upstream
    models' per-replica counters) are merged into one, as Prometheus requires."""

    def __init__(self, registries: Sequence[CollectorRegistry]) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Any]:
        merged: dict[str, Any] = {}
        for registry in self.registries:
            for family in registry.collect():
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        yield from merged.values()


class ServerMetrics:
    """All metrics of one app, in a registry of its own; every figure is labelled by model."""

    def __init__(self, engines: Engine | Sequence[Engine]) -> None:
        self.registry = CollectorRegistry()
        engines = [engines] if not isinstance(engines, Sequence) else list(engines)
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
        r.register(_EngineCollector(engines))
        extras: list[CollectorRegistry] = []
        for engine in engines:
            engine.add_finish_listener(partial(self.observe, model=engine.model_name))
            # Backends with metrics of their own (the upstream engine's per-replica counters).
            extras.extend(getattr(engine, "metric_registries", lambda: [])())
        if extras:
            r.register(_Forward(extras))

    def observe(self, done: FinishedRequest, model: str) -> None:
        """Record one finished request of ``model`` and write its log line."""
        t = done.timings
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
