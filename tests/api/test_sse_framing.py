"""The SSE response's own per-chunk work (issue #9): its framing and its send timer.

r1serve frames its ``data:`` events itself and times sends with one timer per stream instead of
sse_starlette's general encoder and per-send cancel scope. These check that the bytes are the
ones sse_starlette would send, that a stalled send is still cut (and only a stalled one), and
that the sse_starlette hook it overrides still exists (a renamed hook would silently bring the
slow path back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sse_starlette import EventSourceResponse, ServerSentEvent

from r1serve.api.sse import _choice, _dumps, event_stream, frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(json_values)
def test_a_json_event_is_framed_as_sse_starlette_frames_it(value: object) -> None:
    payload = _dumps(value)
    assert frame(payload) == ServerSentEvent(payload, sep="\n").encode()
    assert frame("[DONE]") == ServerSentEvent("[DONE]", sep="\n").encode()


@given(st.integers(0, 64), st.text(), json_values, st.sampled_from([None, "stop", "length"]))
def test_a_choice_is_encoded_as_the_whole_dict_would_be(
    index: int, text: str, logprobs: object, finish: str | None
) -> None:
    head = _dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1})[:-1]
    for extra in ({}, {"stop_reason": "repetition"}):
        whole = {"index": index, "delta": {"content": text}, "logprobs": logprobs,
                 "finish_reason": finish, **extra}  # fmt: skip
        got = _choice(head, index, "delta", {"content": text}, logprobs, finish, extra)
        assert got == f'{head},"choices":[{_dumps(whole)}]}}'
        assert json.loads(got)["choices"][0] == whole


def test_the_overridden_sse_starlette_hook_exists() -> None:
    assert callable(vars(EventSourceResponse).get("_send_with_timeout"))


async def _events(n: int, closed: list[bool]) -> AsyncIterator[bytes]:
    try:
        for i in range(n):
            yield frame(str(i))
    finally:
        closed.append(True)


async def _serve(response: EventSourceResponse, send: Any, disconnect: asyncio.Event) -> None:
    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await response(scope, receive, send)


def test_a_send_that_stalls_past_the_timeout_is_cut_and_the_events_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body") == frame("2"):
            await asyncio.Event().wait()  # the client stopped reading

    async def main() -> float:
        response = event_stream(_events(1000, closed), send_timeout_s=0.4)
        started = time.monotonic()
        await asyncio.wait_for(_serve(response, send, asyncio.Event()), 30)
        return time.monotonic() - started

    with caplog.at_level(logging.WARNING, "r1serve.api"):
        took = asyncio.run(main())
    assert took >= 0.4  # not before the timeout
    assert closed == [True]
    bodies = [m.get("body") for m in sent if m["type"] == "http.response.body"]
    assert bodies[:3] == [frame("0"), frame("1"), frame("2")]
    assert len(bodies) <= 4  # nothing sent after the stalled chunk but, at most, the end
    assert any("stopped reading for 0.4 s" in r.getMessage() for r in caplog.records)


def test_slow_sends_under_the_timeout_are_not_cut() -> None:
    closed: list[bool] = []
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.sleep(0.1)  # each send well under the 0.5 s limit, 1.2 s in all
            sent.append(message.get("body", b""))

    async def main() -> None:
        response = event_stream(_events(12, closed), send_timeout_s=0.5)
        await asyncio.wait_for(_serve(response, send, asyncio.Event()), 60)

    asyncio.run(main())
    assert sent[:12] == [frame(str(i)) for i in range(12)]
    assert sent[-1] == b""  # the response ended normally
    assert closed == [True]
