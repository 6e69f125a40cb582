"""Long-running checks against ``r1serve serve``: memory, cancellation, and a free event loop.

1. Resident memory (RSS of the server process) after 100 requests and after 1,000.
2. 1,000 cancel cycles: the client goes away while its request waits for a slot, before the
   first token, or mid-stream (a third each); then ``/metrics`` must show nothing running or
   waiting and no KV cache in use.
3. ``/health`` latency (p99) while 32 streams run.

The server gets ``--max-num-seqs 32``: 32 streams run at once, and filling every slot (so that a
new request must wait) takes 32 blocking streams.

    python -m bench.soak --model DIR [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from r1serve.client.bench import BenchPrompt, chunk_text, load_prompts, send_request
from r1serve.client.bench_stats import distribution
from r1serve.client.sse import aiter_json

HEALTH_STREAMS = 32
CHAT = "/v1/chat/completions"


def _body(prompt: BenchPrompt, max_tokens: int) -> dict[str, Any]:
    return {
        "messages": list(prompt.messages),
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def engine_gauges(http: httpx.AsyncClient) -> dict[str, float]:
    """running, waiting, kv_used, max_running from r1serve's /metrics."""
    text = (await http.get("/metrics")).text
    wanted = {
        "r1serve_requests_running": "running",
        "r1serve_requests_waiting": "waiting",
        "r1serve_kv_cache_tokens_used": "kv_used",
        "r1serve_max_running": "max_running",
    }
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in wanted and family.samples:
            found[wanted[family.name]] = family.samples[0].value
    return found


async def run_requests(
    http: httpx.AsyncClient, prompts: list[BenchPrompt], count: int, concurrency: int, tokens: int
) -> int:
    """``count`` complete requests with ``concurrency`` in flight; the number that failed."""
    queue = iter(range(count))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for index in queue:
            record = await send_request(http, CHAT, _body(prompts[index % len(prompts)], tokens))
            failed += not record.ok

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


async def cancel_once(http: httpx.AsyncClient, body: dict[str, Any], kind: str) -> None:
    """Open a stream and drop it: at the headers, at the first chunk, or at the first text."""
    async with http.stream("POST", CHAT, json=body) as response:
        if kind == "before_first_token" or response.status_code != 200:
            return
        async for chunk in aiter_json(response):
            if kind == "queued":  # the role chunk comes at once, while the request waits
                return
            reasoning, answer, _ = chunk_text(chunk)
            if reasoning or answer:
                return


async def cancel_cycles(
    http: httpx.AsyncClient, prompts: list[BenchPrompt], cycles: int, tokens: int
) -> dict[str, Any]:
    """Cancel ``cycles`` requests, a third of each kind; queued ones while every slot is busy."""
    kinds = {"queued": cycles // 3, "before_first_token": cycles // 3}
    kinds["mid_stream"] = cycles - sum(kinds.values())
    gauges = await engine_gauges(http)
    slots = int(gauges.get("max_running", HEALTH_STREAMS))
    stop = asyncio.Event()
    seen_waiting = 0

    async def blocker(index: int) -> None:  # keeps one slot busy until told to stop
        while not stop.is_set():
            body = _body(prompts[index % len(prompts)], 2048)
            with contextlib.suppress(httpx.HTTPError):
                async with http.stream("POST", CHAT, json=body) as response:
                    async for _ in response.aiter_lines():
                        if stop.is_set():
                            break

    blockers = [asyncio.create_task(blocker(i)) for i in range(slots)]
    try:
        while (await engine_gauges(http)).get("running", 0) < slots:
            await asyncio.sleep(0.1)
        for cycle in range(kinds["queued"]):
            await cancel_once(http, _body(prompts[cycle % len(prompts)], tokens), "queued")
            if cycle % 25 == 0:
                seen_waiting += (await engine_gauges(http)).get("waiting", 0) > 0
    finally:
        stop.set()
        await asyncio.gather(*blockers, return_exceptions=True)
    for kind in ("before_first_token", "mid_stream"):
        for cycle in range(kinds[kind]):
            await cancel_once(http, _body(prompts[cycle % len(prompts)], tokens), kind)
    settled = await wait_idle(http)
    return {"cycles": kinds, "slots_blocked": slots, "samples_with_waiting": seen_waiting,
            **settled}  # fmt: skip


async def wait_idle(http: httpx.AsyncClient, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll /metrics until nothing runs, waits or holds KV; the last values seen."""
    started = time.monotonic()
    gauges = await engine_gauges(http)
    while any(gauges.get(k, 0) for k in ("running", "waiting", "kv_used")):
        if time.monotonic() - started > timeout_s:
            break
        await asyncio.sleep(0.1)
        gauges = await engine_gauges(http)
    idle = not any(gauges.get(k, 0) for k in ("running", "waiting", "kv_used"))
    return {"idle_after": idle, "seconds_to_idle": time.monotonic() - started, "gauges": gauges}


async def health_under_load(
    http: httpx.AsyncClient, prompts: list[BenchPrompt], streams: int, tokens: int
) -> dict[str, Any]:
    """/health latency sampled every 50 ms while ``streams`` streams run."""
    tasks = [
        asyncio.create_task(send_request(http, CHAT, _body(prompts[i % len(prompts)], tokens)))
        for i in range(streams)
    ]
    latencies: list[float] = []
    running_seen = 0.0
    await asyncio.sleep(0.5)  # let them all be admitted
    while not all(task.done() for task in tasks):
        sent = time.perf_counter()
        response = await http.get("/health")
        latencies.append(time.perf_counter() - sent)
        running_seen = max(running_seen, float(response.json().get("running", 0)))
        await asyncio.sleep(0.05)
    records = await asyncio.gather(*tasks)
    dist = distribution(latencies)
    return {
        "streams": streams,
        "max_tokens": tokens,
        "most_running_seen": running_seen,
        "failed_streams": sum(not r.ok for r in records),
        "health_latency_s": None if dist is None else dataclasses.asdict(dist),
    }


async def soak(
    url: str, rss: Callable[[], int], *, requests: int, checkpoint: int, cycles: int,
    concurrency: int, tokens: int, health_tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """All three checks against a running r1serve at ``url``."""
    prompts = load_prompts("chat")
    limits = httpx.Limits(max_connections=HEALTH_STREAMS * 2 + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        result: dict[str, Any] = {"rss_start_bytes": rss()}
        failed = await run_requests(http, prompts, checkpoint, concurrency, tokens)
        result["rss_after_checkpoint_bytes"] = rss()
        failed += await run_requests(http, prompts, requests - checkpoint, concurrency, tokens)
        result["rss_after_all_bytes"] = rss()
        result.update(requests=requests, checkpoint=checkpoint, failed_requests=failed)
        result["rss_growth_ratio"] = (
            result["rss_after_all_bytes"] / result["rss_after_checkpoint_bytes"]
        )
        result["cancel"] = await cancel_cycles(http, prompts, cycles, tokens)
        result["rss_after_cancels_bytes"] = rss()
        result["health"] = await health_under_load(http, prompts, HEALTH_STREAMS, health_tokens)
    return result


def run_soak(model: Path, *, threads: int, log_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Start r1serve (32 slots), run the checks, stop it."""
    from bench.servers import ServerProcess, r1serve_spec

    sizes = (
        {"requests": 30, "checkpoint": 10, "cycles": 30, "tokens": 8, "health_tokens": 32}
        if quick
        else {"requests": 1000, "checkpoint": 100, "cycles": 1000, "tokens": 32,
              "health_tokens": 128}
    )  # fmt: skip
    spec = r1serve_spec(model, threads, "--max-num-seqs", str(HEALTH_STREAMS))
    spec.name = "r1serve-soak"
    with ServerProcess(spec, threads=threads, log_dir=log_dir) as server:
        result = asyncio.run(soak(server.url, server.rss_bytes, concurrency=8, **sizes))
    result["command"] = server.command
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Memory, cancellation and /health checks.")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--log-dir", type=Path, default=Path("bench/results/logs/soak"))
    args = parser.parse_args()
    result = run_soak(args.model, threads=args.threads, log_dir=args.log_dir, quick=args.quick)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
