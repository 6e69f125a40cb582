"""The official openai client works unchanged against the server."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from support.api import LiveServer

Start = Callable[..., LiveServer]


def client_for(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_chat_non_streaming(live_server: Start) -> None:
    client = client_for(live_server())
    result = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}]
    )
    message = result.choices[0].message
    assert message.content == "The **answer** is 42."
    assert message.model_extra and message.model_extra["reasoning_content"] == "Let me think."
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens > 0


def test_chat_streaming(live_server: Start) -> None:
    client = client_for(live_server())
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, reasoning, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            extra = choice.delta.model_extra or {}
            reasoning.append(extra.get("reasoning_content") or "")
            finish = choice.finish_reason or finish
    assert "".join(content) == "The **answer** is 42."
    assert "".join(reasoning) == "Let me think."
    assert finish == "stop"
    assert usage is not None and usage.total_tokens > 0


def test_completions_and_models(live_server: Start) -> None:
    client = client_for(live_server("plain text"))
    assert [m.id for m in client.models.list()] == ["fake-model"]
    result = client.completions.create(model="fake-model", prompt="Once upon", max_tokens=5)
    assert result.choices[0].text == "plain text"
    streamed = client.completions.create(model="fake-model", prompt="x", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "plain text"


def test_errors_map_to_client_exceptions(live_server: Start) -> None:
    client = client_for(live_server())
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}], temperature=-1
        )
    assert caught.value.body and "temperature" in str(caught.value.body)
