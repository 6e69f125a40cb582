"""Fields of a chat request reach the prompt, or get OpenAI's 400: never silently dropped
(issue #14, 5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.protocol import Prompt
from support.api import HI, chat

Build = Callable[..., tuple[TestClient, FakeEngine]]
URL = "/v1/chat/completions"
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def recording(engine: FakeEngine) -> list[list[dict[str, Any]]]:
    """Every message list the engine renders from now on."""
    seen: list[list[dict[str, Any]]] = []
    render = engine.render_chat

    def render_chat(messages: Sequence[Mapping[str, object]], **kwargs: Any) -> Prompt:
        seen.append([dict(m) for m in messages])
        return render(messages, **kwargs)

    engine.render_chat = render_chat  # type: ignore[method-assign]
    return seen


def error_of(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post(URL, json={"messages": HI, **fields})
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def test_a_developer_message_reaches_the_prompt_as_system(make_client: Build) -> None:
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply("ok")

    client, _ = make_client(reply)
    messages = [{"role": "developer", "content": "Answer in French."}, *HI]
    assert chat(client, messages)["choices"][0]["message"]["content"] == "ok"
    assert "<|im_start|>system\nAnswer in French.<|im_end|>" in prompts[0]
    assert "developer" not in prompts[0]


def test_assistant_tool_calls_with_null_content_reach_the_template(make_client: Build) -> None:
    client, engine = make_client("ok")
    seen = recording(engine)
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": "18 C", "tool_call_id": "call_1"},
    ]
    chat(client, messages)
    assistant, tool = seen[0][1], seen[0][2]
    assert assistant == {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
    assert tool == {"role": "tool", "content": "18 C", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_fields_openai_refuses_are_400(
    client: TestClient, fields: dict[str, Any], param: str
) -> None:
    error = error_of(client, **fields)
    assert error["param"] == param, error


def test_stream_options_without_stream_on_completions_is_400(client: TestClient) -> None:
    body = {"prompt": "x", "stream_options": {"include_usage": True}}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "stream_options"


def test_what_openai_accepts_still_works(client: TestClient) -> None:
    chat(client, modalities=["text"], functions=None, top_logprobs=None, stream_options=None)


def test_max_completion_tokens_replaces_max_tokens(make_client: Build) -> None:
    client, _ = make_client(FakeReply("x", eos=False, repeat=True))
    body = chat(client, max_tokens=9, max_completion_tokens=3)
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"
    assert chat(client, max_completion_tokens=4)["usage"]["completion_tokens"] == 4
    assert chat(client, max_tokens=5)["usage"]["completion_tokens"] == 5
