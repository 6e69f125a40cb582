"""What one benchmark request measured, and the per-level summary built from many of them.

Definitions follow vLLM's ``vllm bench serve``, measured at the client: TTFT is request sent ->
first streamed text (reasoning or answer); TTFO is request sent -> first *answer* text; TPOT is
``(latency - TTFT) / (output tokens - 1)`` per request; ITL is every gap between text chunks;
latency runs to the end of the stream; throughputs divide totals by the level's wall time.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TokenSource = Literal["usage", "chunks", "mixed", "none"]


@dataclass(slots=True)
class RequestRecord:
    """One request as the client saw it; times are seconds from sending it."""

    ok: bool = False
    error: str | None = None
    ttft: float | None = None
    ttfo: float | None = None
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    chunks: int = 0  # chunks that carried text
    usage_tokens: int | None = None  # completion_tokens from the server's usage, when sent
    finish_reason: str | None = None

    @property
    def output_tokens(self) -> int:
        """Tokens from the server's usage; text chunks counted when it sent none."""
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first, as vLLM defines it."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Mean and percentiles of one metric, in seconds (or tokens/s where named so)."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1-99) with linear interpolation, numpy's default that vLLM reports."""
    if not values:
        raise ValueError("percentile of no values")
    if not 1 <= q <= 99:
        raise ValueError(f"percentile must be 1 to 99, got {q}")
    if len(values) == 1:
        return values[0]
    # "inclusive": min is the 0th and max the 100th percentile, as numpy's linear method.
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def distribution(values: list[float]) -> Distribution | None:
    """Summary of ``values``; None when there are none."""
    if not values:
        return None
    return Distribution(
        count=len(values),
        mean=statistics.fmean(values),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
    )


@dataclass(frozen=True, slots=True)
class LevelSummary:
    """Everything measured at one concurrency level."""

    concurrency: int
    requests: int
    completed: int
    errors: int
    error_messages: list[str]
    wall_s: float
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    mean_output_tokens: float
    token_count_source: TokenSource
    finish_reasons: dict[str, int]
    ended_before_max_tokens: int
    ttft: Distribution | None
    ttfo: Distribution | None
    tpot: Distribution | None
    itl: Distribution | None
    latency: Distribution | None
    client_cpu_s: float
    client_cpu_ms_per_request: float
    client_cpu_percent: float  # of one core, over the level's wall time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _token_source(done: list[RequestRecord]) -> TokenSource:
    from_usage = sum(r.usage_tokens is not None for r in done)
    if not done:
        return "none"
    if from_usage == len(done):
        return "usage"
    return "chunks" if from_usage == 0 else "mixed"


def summarize(
    concurrency: int,
    records: list[RequestRecord],
    *,
    wall_s: float,
    client_cpu_s: float,
    max_tokens: int,
    keep_errors: int = 5,
) -> LevelSummary:
    """Aggregate one level's requests; failed requests count only as errors."""
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    messages: list[str] = []
    for r in failed:
        if r.error and r.error not in messages and len(messages) < keep_errors:
            messages.append(r.error)
    tokens = sum(r.output_tokens for r in done)
    wall = max(wall_s, 1e-9)
    return LevelSummary(
        concurrency=concurrency,
        requests=len(records),
        completed=len(done),
        errors=len(failed),
        error_messages=messages,
        wall_s=wall_s,
        output_tokens=tokens,
        output_tokens_per_s=tokens / wall,
        requests_per_s=len(done) / wall,
        mean_output_tokens=tokens / len(done) if done else 0.0,
        token_count_source=_token_source(done),
        finish_reasons=dict(Counter(r.finish_reason or "none" for r in done)),
        ended_before_max_tokens=sum(r.output_tokens < max_tokens for r in done),
        ttft=distribution([r.ttft for r in done if r.ttft is not None]),
        ttfo=distribution([r.ttfo for r in done if r.ttfo is not None]),
        tpot=distribution([t for r in done if (t := r.tpot) is not None]),
        itl=distribution([gap for r in done for gap in r.itl]),
        latency=distribution([r.latency for r in done]),
        client_cpu_s=client_cpu_s,
        client_cpu_ms_per_request=1000 * client_cpu_s / len(records) if records else 0.0,
        client_cpu_percent=100 * client_cpu_s / wall,
    )
