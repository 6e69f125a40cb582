"""Issue #14 item 3: prompts never render or tokenize on the event loop, and a full server or
an oversized prompt is refused before that work starts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.protocol import Prompt
from r1serve.engine.transformers.scheduler import SchedulerConfig
from support.api import HI, make_settings, wait_for

Build = Callable[..., tuple[TestClient, FakeEngine]]
SLOW = FakeReply(chunks=[f"w{i} " for i in range(200)], delay_s=0.02, eos=False)


class RenderLog:
    """Wraps an engine's ``render_chat``: records whether each call ran on an event loop."""

    def __init__(self, engine: FakeEngine) -> None:
        self.on_loop: list[bool] = []
        original = engine.render_chat

        def render(messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Prompt:
            try:
                asyncio.get_running_loop()
                self.on_loop.append(True)
            except RuntimeError:
                self.on_loop.append(False)
            return original(messages, **kwargs)

        engine.render_chat = render  # type: ignore[method-assign]


@pytest.fixture
def build(make_client: Build) -> Build:
    return make_client


def test_chat_simple_and_history_prompts_render_off_the_event_loop(build: Build) -> None:
    client, engine = build("Hello there.")
    log = RenderLog(engine)
    chat = {"messages": HI, "max_tokens": 3}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    assert client.post("/v1/chat/completions", json={**chat, "stream": True}).status_code == 200
    assert client.post("/generate", json={"prompt": "hi", "max_length": 3}).status_code == 200
    assert client.get("/stream-generate", params={"prompt": "hi"}).status_code == 200
    cid = client.post("/api/conversations", json={}).json()["id"]
    reply = client.post(f"/api/conversations/{cid}/messages", json={"content": "hi"})
    assert reply.status_code == 200 and "[DONE]" in reply.text
    assert len(log.on_loop) >= 5 and not any(log.on_loop), log.on_loop


def test_a_full_server_refuses_before_rendering(build: Build) -> None:
    client, engine = build(SLOW, max_slots=1, scheduler_config=SchedulerConfig(max_waiting=0))
    log = RenderLog(engine)
    holder = threading.Thread(
        target=client.post,
        args=("/v1/chat/completions",),
        kwargs={"json": {"messages": HI, "max_tokens": 150}},
        daemon=True,
    )
    holder.start()
    assert wait_for(lambda: engine.stats().running == 1, timeout=10)
    rendered = len(log.on_loop)
    for body in ({"messages": HI, "stream": True}, {"messages": HI}):
        refused = client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 503, refused.text
        assert "Retry-After" in refused.headers
    assert client.post("/v1/completions", json={"prompt": "hi"}).status_code == 503
    assert client.post("/generate", json={"prompt": "hi"}).status_code == 503
    assert len(log.on_loop) == rendered  # no refused prompt was rendered
    holder.join(30)


def test_an_oversized_prompt_is_refused_by_its_characters_before_rendering(
    build: Build,
) -> None:
    client, engine = build(settings=make_settings(max_prompt_chars=1000))
    log = RenderLog(engine)
    long = [{"role": "user", "content": "x" * 600}, {"role": "user", "content": "y" * 600}]
    refused = client.post("/v1/chat/completions", json={"messages": long})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and "1200 characters" in error["message"]
    text = client.post("/v1/completions", json={"prompt": "z" * 1001})
    assert text.status_code == 400 and text.json()["error"]["param"] == "prompt"
    assert log.on_loop == []
    fits = client.post("/v1/chat/completions", json={"messages": long[:1], "max_tokens": 2})
    assert fits.status_code == 200 and log.on_loop == [False]
