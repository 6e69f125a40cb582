"""Replicas of one upstream model: least-outstanding-requests routing, health, limits, metrics.

A replica is ``up`` until a request cannot reach it (connection refused, reset, 5xx) or a health
check (``GET {url}/models``) fails; it is then ejected and gets no new requests until a check
passes again. ``pick`` chooses the up replica with the fewest requests in flight that is below
its concurrency limit; with none, the request gets 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from r1serve.errors import OverloadedError

log = logging.getLogger("r1serve.upstream")

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


@dataclass(slots=True)
class Replica:
    """One upstream URL and what r1serve knows about it now."""

    url: str  # base of its OpenAI API, without a trailing slash: http://gpu:8000/v1
    limit: int
    up: bool = True
    outstanding: int = 0
    last_error: str | None = None
    order: int = field(default=0)

    @property
    def name(self) -> str:
        """How errors sent to clients name it: its position, not its internal address."""
        return f"upstream replica #{self.order + 1}"


class ReplicaMetrics:
    """Per-replica counters in a registry of their own, which the server's /metrics includes."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "replica"]
        r = self.registry
        self.model = model
        self.requests = Counter(
            "r1serve_upstream_requests", "Requests sent to an upstream replica.", labels, registry=r
        )
        self.errors = Counter(
            "r1serve_upstream_errors",
            "Failed requests to an upstream replica, by kind (connect, status, stream, timeout).",
            [*labels, "kind"],
            registry=r,
        )
        self.latency = Histogram(
            "r1serve_upstream_request_seconds",
            "Request to an upstream replica, sent to last chunk.",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.up = Gauge(
            "r1serve_upstream_up",
            "1 while the replica takes requests, 0 while ejected.",
            labels,
            registry=r,
        )
        self.outstanding = Gauge(
            "r1serve_upstream_outstanding", "Requests in flight on the replica.", labels, registry=r
        )


class ReplicaPool:
    """The replicas of one model; all methods run on the event loop."""

    def __init__(
        self,
        urls: Iterable[str],
        *,
        model: str,
        limit: int,
        health_interval_s: float,
        retry_after_s: int = 2,
    ) -> None:
        self.replicas = [
            Replica(url.rstrip("/"), limit, order=i) for i, url in enumerate(dict.fromkeys(urls))
        ]
        self.metrics = ReplicaMetrics(model)
        self.health_interval_s = health_interval_s
        self.retry_after_s = retry_after_s
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None
        for r in self.replicas:
            self._gauges(r)

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.replicas)

    def _gauges(self, r: Replica) -> None:
        m = self.metrics
        m.up.labels(m.model, r.url).set(1 if r.up else 0)
        m.outstanding.labels(m.model, r.url).set(r.outstanding)

    def room(self) -> int:
        """Requests the pool can take now."""
        return sum(max(0, r.limit - r.outstanding) for r in self.replicas if r.up)

    def check(self, pending: int = 0) -> None:
        """OverloadedError when no replica can take ``pending`` + 1 more requests."""
        if self.room() > pending:
            return
        up = [r for r in self.replicas if r.up]
        if not up:
            reasons = "; ".join(f"#{r.order + 1}: {r.last_error or 'down'}" for r in self.replicas)
            raise OverloadedError(
                f"every upstream replica is down ({reasons}); retry later",
                retry_after=self.retry_after_s,
            )
        raise OverloadedError(
            f"every upstream replica is full ({len(up)} up, {up[0].limit} requests each); "
            "retry later",
            retry_after=self.retry_after_s,
        )

    def pick(self, exclude: Iterable[Replica] = ()) -> Replica:
        """The up replica with the fewest requests in flight (ties take turns); 503 for none."""
        skip = set(id(r) for r in exclude)
        free = [r for r in self.replicas if r.up and r.outstanding < r.limit and id(r) not in skip]
        if not free:
            self.check(len(self.replicas) * 10**9)  # raises with the reason
        turn = next(self._turn)
        n = len(self.replicas)
        best = min(free, key=lambda r: (r.outstanding, (r.order - turn) % n))
        best.outstanding += 1
        self.metrics.requests.labels(self.metrics.model, best.url).inc()
        self._gauges(best)
        return best

    def release(self, replica: Replica, seconds: float | None) -> None:
        replica.outstanding -= 1
        if seconds is not None:
            self.metrics.latency.labels(self.metrics.model, replica.url).observe(seconds)
        self._gauges(replica)

    def failed(self, replica: Replica, kind: str, reason: str, *, eject: bool) -> None:
        """Count an error; ``eject`` (the replica itself failed) takes it out until it heals."""
        self.metrics.errors.labels(self.metrics.model, replica.url, kind).inc()
        if eject and replica.up:
            log.warning("%s (%s) ejected: %s", replica.name, replica.url, reason)
            replica.up = False
            replica.last_error = reason
            self._gauges(replica)

    def healed(self, replica: Replica) -> None:
        if not replica.up:
            log.warning("%s (%s) re-admitted", replica.name, replica.url)
        replica.up = True
        replica.last_error = None
        self._gauges(replica)

    # ---- health checks ----------------------------------------------------------------

    def start(self, client: httpx.AsyncClient, headers: Callable[[], dict[str, str]]) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._health_loop(client, headers))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def probe(
        self, replica: Replica, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> dict[str, object] | None:
        """One health check; the /models body when it passed."""
        try:
            response = await client.get(
                f"{replica.url}/models", headers=headers, timeout=self.health_interval_s + 5
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.failed(replica, "health", f"health check failed: {exc!r}"[:300], eject=True)
            return None
        self.healed(replica)
        return body if isinstance(body, dict) else {}

    async def _health_loop(
        self, client: httpx.AsyncClient, headers: Callable[[], dict[str, str]]
    ) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            started = time.monotonic()
            await asyncio.gather(*(self.probe(r, client, headers()) for r in self.replicas))
            log.debug("upstream health checks took %.3f s", time.monotonic() - started)
