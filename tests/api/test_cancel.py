"""A client that goes away stops its generation on the server (streaming or not)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable

import httpx
import pytest

from r1serve.engine.fake import FakeReply
from support.api import HI, LiveServer, wait_for

SLOW = FakeReply(chunks=[f"w{i} " for i in range(400)], delay_s=0.02)
Start = Callable[..., LiveServer]


def test_stream_disconnect_aborts_generation(live_server: Start) -> None:
    server = live_server(SLOW)
    with (
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"messages": HI, "stream": True}
        ) as response,
    ):
        lines = response.iter_lines()
        seen = [line for _, line in zip(range(6), lines, strict=False)]
        assert any(line.startswith("data: ") for line in seen)
    assert wait_for(lambda: list(server.engine.finished.values()) == ["abort"])
    steps = len(server.engine.fake_runner.decode_batches)
    assert steps < 100  # stopped long before the 400-token script ended
    assert wait_for(lambda: server.engine.stats().running == 0)


def test_non_stream_disconnect_aborts_generation(live_server: Start) -> None:
    server = live_server(SLOW)

    def call() -> None:
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=0.3)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    assert wait_for(lambda: list(server.engine.finished.values()) == ["abort"])
    assert wait_for(lambda: server.engine.stats().running == 0)


def test_simple_stream_disconnect_aborts(live_server: Start) -> None:
    server = live_server(SLOW)
    with (
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream("GET", "/stream-generate", params={"prompt": "hello"}) as response,
    ):
        for _ in zip(range(4), response.iter_lines(), strict=False):
            pass
    assert wait_for(lambda: list(server.engine.finished.values()) == ["abort"])


def test_cancelling_one_request_leaves_others_intact(live_server: Start) -> None:
    text = [f"t{i} " for i in range(60)]
    server = live_server(FakeReply(chunks=text, delay_s=0.01))
    results: dict[str, str] = {}

    def full() -> None:
        body = httpx.post(
            f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30
        ).json()
        results["full"] = body["choices"][0]["message"]["content"]

    worker = threading.Thread(target=full)
    worker.start()
    with (
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"messages": HI, "stream": True}
        ) as response,
    ):
        for _ in zip(range(5), response.iter_lines(), strict=False):
            pass
    worker.join()
    assert results["full"] == "".join(text)
    assert sorted(server.engine.finished.values()) == ["abort", "stop"]


def test_client_that_never_reads_is_dropped(
    live_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    from support.api import make_settings

    # Endless, so that only the dropped client can end it, however fast the machine is.
    big = FakeReply(chunks=["x" * 4000], eos=False, repeat=True, delay_s=0.001)
    server = live_server(big, settings=make_settings(send_timeout_s=1.0))
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps({"messages": HI, "stream": True}).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    try:  # never read: the server's send buffer fills and its send times out
        assert wait_for(lambda: list(server.engine.finished.values()) == ["abort"], 120)
    finally:
        sock.close()

    # One log line says what happened; no traceback reaches the log. The engine sees the abort
    # before the response's send timeout reaches the handler that logs it: wait for the line.
    def dropped() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "stopped reading" in r.getMessage()]

    assert wait_for(lambda: len(dropped()) > 0, 30)
    lines = dropped()
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert "/v1/chat/completions" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
