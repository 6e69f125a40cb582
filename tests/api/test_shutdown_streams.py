"""Issue #14, item 6: streams that are running when the server shuts down end well-formed.

A real uvicorn server (``DrainingServer``, as ``r1serve serve`` runs) with endless fake replies;
once every stream has its first piece, the server is told to exit, and each body is read to
its end: /v1 gets an error event in OpenAI's shape then ``[DONE]``, /stream-generate its error
event then ``[DONE]``, Ollama an error line, a conversation reply its own end (saved as
incomplete) then ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from r1serve.api.access import AccessWatch, revocable
from r1serve.auth import Principal
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.errors import ShuttingDownError
from support.accounts import secure_settings
from support.api import LiveServer, make_settings, sse_payloads

ENDLESS = FakeReply(chunks=[f"w{i} " for i in range(50)], delay_s=0.02, eos=False, repeat=True)
HI = [{"role": "user", "content": "go on forever"}]


class Stream:
    """One streamed request read to its end in a thread; ``started`` once a piece came."""

    def __init__(self, http: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
        self.started = threading.Event()
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._read, args=(http, method, path, kwargs), daemon=True
        )
        self._thread.start()

    def _read(self, http: httpx.Client, method: str, path: str, kwargs: dict[str, Any]) -> None:
        try:
            with http.stream(method, path, **kwargs) as response:
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():  # to the end of the chunked body
                    self.lines.append(line)
                    if line.strip() and not line.startswith(":"):
                        self.started.set()
        except BaseException as exc:  # a cut body: RemoteProtocolError
            self.error = exc
        finally:
            self.started.set()

    def join(self) -> str:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the stream did not end"
        assert self.error is None, repr(self.error)
        return "\n".join(self.lines) + "\n"


def _shutdown_error(payload: str) -> None:
    error = json.loads(payload)["error"]
    assert error["code"] == "server_shutting_down", error
    assert error["type"] == "server_error" and "shutting down" in error["message"]


def _streams(http: httpx.Client) -> dict[str, Stream]:
    long = {"max_tokens": 3000}
    conversation = http.post("/api/conversations", json={"settings": long}).json()["id"]
    return {
        "chat": Stream(
            http, "POST", "/v1/chat/completions", json={"messages": HI, "stream": True, **long}
        ),
        "completions": Stream(
            http, "POST", "/v1/completions", json={"prompt": "go", "stream": True, **long}
        ),
        "simple": Stream(
            http, "GET", "/stream-generate", params={"prompt": "go", "max_tokens": 3000}
        ),
        "ollama_chat": Stream(
            http,
            "POST",
            "/api/chat",
            json={"model": "fake-model", "messages": HI, "options": {"num_predict": 3000}},
        ),
        "ollama_generate": Stream(
            http,
            "POST",
            "/api/generate",
            json={"model": "fake-model", "prompt": "go", "options": {"num_predict": 3000}},
        ),
        "conversation": Stream(
            http, "POST", f"/api/conversations/{conversation}/messages", json={"content": "go"}
        ),
    }


def _run_until_shutdown(live: LiveServer, headers: dict[str, str]) -> dict[str, str]:
    with httpx.Client(base_url=live.url, timeout=30, headers=headers) as http:
        streams = _streams(http)
        for name, stream in streams.items():
            assert stream.started.wait(30), name
            assert stream.error is None, (name, stream.error)
        live.server.should_exit = True
        return {name: stream.join() for name, stream in streams.items()}


def _assert_well_formed(bodies: dict[str, str]) -> None:
    for name in ("chat", "completions"):
        payloads = sse_payloads(bodies[name])
        assert payloads[-1] == "[DONE]", (name, payloads[-3:])
        _shutdown_error(payloads[-2])
        choices = [c for p in payloads[:-2] for c in json.loads(p)["choices"]]
        # text came before the error (a reader that fell behind gets it in fewer chunks)
        assert "".join(c.get("text") or c.get("delta", {}).get("content") or "" for c in choices)

    simple = bodies["simple"].splitlines()
    assert "event: error" in simple, simple[-6:]
    assert sse_payloads(bodies["simple"])[-1] == "[DONE]"
    _shutdown_error(sse_payloads(bodies["simple"])[-2])

    for name in ("ollama_chat", "ollama_generate"):
        lines = [json.loads(line) for line in bodies[name].splitlines() if line]
        assert "shutting down" in lines[-1]["error"], (name, lines[-2:])
        assert all("error" not in line for line in lines[:-1])

    events = sse_payloads(bodies["conversation"])
    assert events[-1] == "[DONE]", events[-3:]
    assert json.loads(events[-2])["message"]["status"] == "incomplete", events[-2]


def test_running_streams_end_well_formed_at_shutdown() -> None:
    live = LiveServer(FakeEngine(ENDLESS), make_settings())
    with live:
        bodies = _run_until_shutdown(live, {})
        live.thread.join(20)
        assert not live.thread.is_alive(), "the server did not stop"
    _assert_well_formed(bodies)


def test_a_key_holders_streams_end_well_formed_at_shutdown() -> None:
    live = LiveServer(FakeEngine(ENDLESS), secure_settings())
    with live:
        admin = live.accounts.users.by_name("admin").id
        key = live.accounts.keys.create(admin).key
        bodies = _run_until_shutdown(live, {"Authorization": f"Bearer {key}"})
    _assert_well_formed(bodies)


@pytest.mark.parametrize("method", ["local", "api_key"])
def test_end_all_ends_every_lease_with_its_error(method: str) -> None:
    async def main() -> None:
        watch = AccessWatch(lambda principal: None, interval_s=60)
        principal = Principal(user_id=1, username="ada", role="user", method=method)  # type: ignore[arg-type]
        items = revocable(_forever(), watch.lease(principal))
        assert await anext(items) == 0
        assert watch.end_all(ShuttingDownError()) == 1
        with pytest.raises(ShuttingDownError):
            await anext(items)
        assert watch.end_all(ShuttingDownError()) == 0  # released

    asyncio.run(main())


async def _forever() -> AsyncIterator[int]:
    i = 0
    while True:
        yield i
        i += 1
