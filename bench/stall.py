"""Does one big prompt stall everyone? (issue #14 item 3; a benchmark, not a timed test)

Serves the scripted fake engine under uvicorn and measures, while eight 4 MB prompts arrive,
the largest gap between chunks of a running stream and /health's p99; then, in a burst of
twice the admission limit, how fast the excess gets its 503. Targets: gap < 200 ms, /health
p99 < 100 ms, 503 p99 < 100 ms.

    python -m bench.stall [--max-prompt-chars N]

The server runs as ``r1serve serve`` runs it (DrainingServer, which freezes start-up's objects
out of the garbage collector); ``R1SERVE_BENCH_NO_FREEZE=1`` leaves them in, for an A/B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from r1serve.api.app import create_app
from r1serve.api.protocol import HeaderTimeoutProtocol
from r1serve.api.server import DrainingServer
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.transformers.scheduler import SchedulerConfig
from r1serve.settings import Settings

BIG = 4 * 1024 * 1024 - 1024  # a 4 MB body, just under max_body_bytes
STREAM = FakeReply(chunks=[f"w{i} " for i in range(400)], delay_s=0.02, eos=False)


def _run_server(port: int, max_prompt_chars: int | None) -> None:
    """The server, in its own process: the client's 4 MB bodies must not share its GIL."""
    data = Path(tempfile.mkdtemp(prefix="r1serve-bench-"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, auth=False, data_dir=data, max_prompt_chars=max_prompt_chars
    )
    engine = FakeEngine(STREAM, max_slots=4, scheduler_config=SchedulerConfig(max_waiting=4))
    # uvicorn as `r1serve serve` runs it (its protocol, its server class), with the fake engine.
    config = uvicorn.Config(
        create_app(settings, engine), port=port, log_level="error", http=HeaderTimeoutProtocol
    )
    DrainingServer(config, freeze_gc=not os.environ.get("R1SERVE_BENCH_NO_FREEZE")).run()


def _serve(max_prompt_chars: int | None) -> tuple[multiprocessing.Process, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = multiprocessing.Process(target=_run_server, args=(port, max_prompt_chars))
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("bench server did not start")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def _send_big_prompts(url: str, count: int, go: Any, results: Any) -> None:
    """The eight 4 MB prompts, from their own process: encoding and sending 32 MB must not
    stall the loop that times the stream and ``/health`` (as a prober is its own process).

    The process starts, encodes its body and opens its connections before the measurement,
    then waits for ``go``: the window holds the server's work, not a Python start-up's imports
    competing for the two cores.
    """
    body = json.dumps({"messages": [{"role": "user", "content": "x" * BIG}]}).encode()

    async def send() -> None:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            await asyncio.gather(*(http.get("/health") for _ in range(count)))
            results.put("ready")
            await asyncio.to_thread(go.wait)

            async def one() -> int:
                response = await http.post(
                    "/v1/chat/completions",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                return response.status_code

            started = time.perf_counter()
            statuses = list(await asyncio.gather(*(one() for _ in range(count))))
            results.put((statuses, time.perf_counter() - started))

    asyncio.run(send())


async def _big_prompts(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        gaps: list[float] = []
        health: list[float] = []
        done = asyncio.Event()

        async def stream() -> None:
            body = {"messages": [{"role": "user", "content": "go"}], "stream": True,
                    "max_tokens": 300}  # fmt: skip
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                last = None
                async for _ in response.aiter_lines():
                    now = time.perf_counter()
                    if last is not None and not done.is_set():
                        gaps.append(now - last)
                    last = now

        async def poll_health() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await http.get("/health")
                health.append(time.perf_counter() - start)
                await asyncio.sleep(0.01)

        spawn = multiprocessing.get_context("spawn")  # a fresh process, not a fork of this loop
        results: Any = spawn.Queue()
        go: Any = spawn.Event()
        sender = spawn.Process(target=_send_big_prompts, args=(url, 8, go, results))
        sender.start()
        if await asyncio.to_thread(results.get, True, 120) != "ready":
            raise RuntimeError("the prompt sender did not start")
        streamer = asyncio.create_task(stream())
        poller = asyncio.create_task(poll_health())
        await asyncio.sleep(0.5)
        go.set()
        statuses, elapsed = await asyncio.to_thread(results.get)
        await asyncio.to_thread(sender.join, 30)
        await asyncio.sleep(0.3)
        done.set()
        await poller
        streamer.cancel()
    return {
        "big_prompt_statuses": sorted(set(statuses)),
        "big_prompts_s": round(elapsed, 3),
        "stream_max_gap_ms": round(max(gaps) * 1000, 1),
        "health_p99_ms": round(_p99(health) * 1000, 1),
        "health_samples": len(health),
    }


async def _burst(url: str, limit: int) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=url, timeout=120, limits=httpx.Limits(max_connections=4 * limit)
    ) as http:

        async def one() -> tuple[int, float]:
            start = time.perf_counter()
            body = {"messages": [{"role": "user", "content": "go"}], "max_tokens": 20}
            response = await http.post("/v1/chat/completions", json=body)
            return response.status_code, time.perf_counter() - start

        # Open the burst's connections first (clients keep them alive), so that the numbers
        # are the server's answer, not this one process setting up 16 TCP connections.
        await asyncio.gather(*(http.get("/health") for _ in range(2 * limit)))
        results = await asyncio.gather(*(one() for _ in range(2 * limit)))
    refused = [t for code, t in results if code == 503]
    return {
        "burst": 2 * limit,
        "refused_503": len(refused),
        "refusal_p99_ms": round(_p99(refused) * 1000, 1),
        "refusal_max_ms": round(max(refused, default=0) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-prompt-chars", type=int, default=None)
    args = parser.parse_args()
    process, url = _serve(args.max_prompt_chars)
    try:
        print("big prompts:", asyncio.run(_big_prompts(url)))
        print("burst:", asyncio.run(_burst(url, limit=8)))
    finally:
        process.terminate()
        process.join(10)


if __name__ == "__main__":
    main()
