"""The script-style endpoints: GET /stream-generate and POST /generate."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply

Build = Callable[..., tuple[TestClient, FakeEngine]]


def events(body: str) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE body."""
    out, event, data = [], "message", []
    for line in body.splitlines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            out.append((event, "\n".join(data)))
            event, data = "message", []
    return out


def test_generate_returns_answer_and_reasoning(client: TestClient) -> None:
    body = client.post("/generate", json={"prompt": "hi", "max_length": 64}).json()
    assert body["response"] == "The **answer** is 42."
    assert body["reasoning"] == "Let me think."
    assert body["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] > 0


def test_generate_applies_the_chat_template(make_client: Build) -> None:
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply("ok")

    client, _ = make_client(reply)
    client.post("/generate", json={"prompt": "tell me", "temperature": 0.2, "top_p": 0.9})
    assert prompts[-1] == "<|im_start|>user\ntell me<|im_end|>\n<|im_start|>assistant\n"


def test_stream_generate_events(client: TestClient) -> None:
    with client.stream("GET", "/stream-generate", params={"prompt": "hi"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        pairs = events(response.read().decode())
    assert pairs[-1] == ("message", "[DONE]")
    reasoning = "".join(d for e, d in pairs if e == "reasoning")
    answer = "".join(d for e, d in pairs[:-1] if e == "message")
    assert reasoning == "Let me think."
    assert answer == "The **answer** is 42."


def test_stream_generate_keeps_newlines(make_client: Build) -> None:
    client, _ = make_client(FakeReply(chunks=["line one\n", "\nline three", "\r\nend"]))
    with client.stream(
        "GET", "/stream-generate", params={"prompt": "hi", "max_length": 10, "temperature": 0}
    ) as response:
        pairs = events(response.read().decode())
    text = "".join(d for e, d in pairs[:-1] if e == "message")
    assert text.replace("\r\n", "\n") == "line one\n\nline three\nend"


def test_max_length_counts_new_tokens(make_client: Build) -> None:
    client, _ = make_client(FakeReply(chunks=list("abcdefgh")))
    body = client.post("/generate", json={"prompt": "hi", "max_length": 3}).json()
    assert body["response"] == "abc" and body["finish_reason"] == "length"
