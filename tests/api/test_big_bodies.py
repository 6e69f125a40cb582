"""Issue #14 item 3: a big JSON body is parsed off the event loop, and a full server refuses a
generating request before it reads the body at all."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import types
from typing import Any

import httpx
import pytest

from r1serve.api import body as body_module
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.transformers.scheduler import SchedulerConfig
from support.api import HI, LiveServer, make_settings, wait_for

SLOW = FakeReply(chunks=[f"w{i} " for i in range(400)], delay_s=0.02, eos=False)
BIG = body_module.OFF_LOOP_BYTES * 4


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_a_big_json_body_is_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed_on_loop: list[bool] = []

    def loads(data: bytes) -> Any:
        parsed_on_loop.append(_on_loop())
        return json.loads(data)

    spy = types.SimpleNamespace(loads=loads, JSONDecodeError=json.JSONDecodeError)
    monkeypatch.setattr(body_module, "json", spy)
    with LiveServer(FakeEngine("Hello there."), make_settings()) as live:
        big = {"messages": HI, "max_tokens": 3, "x_padding": "x" * BIG}  # an unknown field
        with httpx.Client(base_url=live.url, timeout=30) as http:
            answer = http.post("/v1/chat/completions", json=big)
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            small = http.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 3})
            assert small.status_code == 200
            bad = http.post(
                "/v1/chat/completions",
                content=b'{"messages": "' + b"x" * BIG,
                headers={"Content-Type": "application/json"},
            )
    assert parsed_on_loop == [False, False]  # the big ones only, in a worker thread
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert "JSON" in bad.json()["error"]["message"]


def test_a_full_server_refuses_before_reading_the_body() -> None:
    engine = FakeEngine(SLOW, max_slots=1, scheduler_config=SchedulerConfig(max_waiting=0))
    with LiveServer(engine, make_settings()) as live:
        holder = threading.Thread(
            target=httpx.post,
            args=(f"{live.url}/v1/chat/completions",),
            kwargs={"json": {"messages": HI, "max_tokens": 300}, "timeout": 60},
            daemon=True,
        )
        holder.start()
        assert wait_for(lambda: engine.stats().running == 1, timeout=10)
        for path in ("/v1/chat/completions", "/api/chat", "/generate"):
            # Headers announce 3 MB; none of it is sent. The answer cannot wait for it.
            with socket.create_connection(("127.0.0.1", live.port), timeout=20) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nContent-Length: 3000000\r\n\r\n".encode()
                )
                head = sock.recv(65536).decode(errors="replace")
            assert head.startswith("HTTP/1.1 503"), (path, head[:300])
        holder.join(60)


def test_a_request_admitted_at_the_door_holds_its_place_while_its_body_arrives() -> None:
    """A burst: the excess is refused at once, not after the earlier requests' bodies have
    arrived and their prompts are being prepared (before, all of them passed the door)."""
    engine = FakeEngine(FakeReply(chunks=["Hi."]), max_slots=1,
                        scheduler_config=SchedulerConfig(max_waiting=0))  # fmt: skip
    body = json.dumps({"messages": HI, "max_tokens": 5}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with LiveServer(engine, make_settings()) as live:
        with socket.create_connection(("127.0.0.1", live.port), timeout=60) as first:
            first.sendall(head)  # admitted; its body is still on its way
            assert wait_for(
                lambda: live.server.config.app.state.service.prompts.held == 1, timeout=30
            )
            with socket.create_connection(("127.0.0.1", live.port), timeout=60) as second:
                second.sendall(head)
                answer = second.recv(65536).decode(errors="replace")
            assert answer.startswith("HTTP/1.1 503"), answer[:300]
            first.sendall(body)
            reply = b""
            while chunk := first.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        assert wait_for(lambda: live.server.config.app.state.service.prompts.held == 0, timeout=30)
