"""Test support for the HTTP layer: settings, a live uvicorn server, SSE parsing, requests."""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient

from r1serve.api.app import create_app
from r1serve.api.protocol import HeaderTimeoutProtocol
from r1serve.api.server import DrainingServer
from r1serve.auth import close_accounts
from r1serve.engine.fake import FakeEngine
from r1serve.settings import Settings
from support.accounts import test_accounts

REPLY = "<think>\nLet me think.\n</think>\n\nThe **answer** is 42."
HI = [{"role": "user", "content": "hi"}]


_DATA_ROOT = Path(tempfile.mkdtemp(prefix="r1serve-tests-"))
atexit.register(shutil.rmtree, _DATA_ROOT, ignore_errors=True)


def make_settings(**overrides: Any) -> Settings:
    """Settings for app tests: local mode (no logins), a fresh database, TestClient's host."""
    defaults: dict[str, Any] = {
        "auth": False,
        "data_dir": Path(tempfile.mkdtemp(dir=_DATA_ROOT)),
        "allowed_hosts": ["testserver", "127.0.0.1", "localhost"],
    }
    return Settings(_env_file=None, **{**defaults, **overrides})  # type: ignore[call-arg]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The app under a real uvicorn in a background thread (for disconnects and clients)."""

    def __init__(self, engine: FakeEngine, settings: Settings | None = None) -> None:
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = settings or make_settings()
        self.accounts = test_accounts(settings)
        config = uvicorn.Config(
            create_app(settings, engine, self.accounts),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            http=HeaderTimeoutProtocol,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
        )
        # A test process is not only this server: its objects stay with the garbage collector.
        self.server = DrainingServer(config, freeze_gc=False)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        close_accounts(self.accounts)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll until ``predicate`` holds; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def sse_payloads(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (multi-line data joined)."""
    events, current = [], []
    for line in text.splitlines():
        if line.startswith("data:"):
            current.append(line[5:].removeprefix(" "))
        elif line == "" and current:
            events.append("\n".join(current))
            current = []
    if current:
        events.append("\n".join(current))
    return events


def chat(client: TestClient, messages: list[dict[str, Any]] | None = None, **fields: Any) -> Any:
    response = client.post("/v1/chat/completions", json={"messages": messages or HI, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def stream_chat(
    client: TestClient, messages: list[dict[str, Any]] | None = None, **fields: Any
) -> list[str]:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"messages": messages or HI, "stream": True, **fields},
    ) as response:
        assert response.status_code == 200, response.read()
        return sse_payloads(response.read().decode())
