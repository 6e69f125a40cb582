"""Text completions: raw prompts, echo, several prompts, streaming."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi.testclient import TestClient

from r1serve.engine.fake import CONTROL, FakeEngine, FakeReply
from support.api import sse_payloads

Build = Callable[..., tuple[TestClient, FakeEngine]]


def test_completion_is_raw_text(make_client: Build) -> None:
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply("<think>x</think> y")

    client, _ = make_client(reply)
    body = client.post("/v1/completions", json={"prompt": "Once"}).json()
    assert prompts[-1] == "Once"
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "<think>x</think> y"  # no reasoning split here


def test_completion_parses_control_tokens(make_client: Build) -> None:
    client, engine = make_client("ok")
    ids = engine.tokenizer.encode("<|im_start|>user", add_special_tokens=True)
    assert ids[0] == CONTROL["<|im_start|>"]
    assert client.post("/v1/completions", json={"prompt": "<|im_start|>u"}).status_code == 200


def test_echo_and_several_prompts(make_client: Build) -> None:
    client, _ = make_client(["A", "B"])
    body = client.post("/v1/completions", json={"prompt": ["p1", "p2"], "echo": True}).json()
    assert [c["text"] for c in body["choices"]] == ["p1A", "p2B"]
    assert body["usage"]["prompt_tokens"] == 4


def test_completion_stream(make_client: Build) -> None:
    client, _ = make_client("streamed")
    with client.stream(
        "POST",
        "/v1/completions",
        json={"prompt": "x", "stream": True, "stream_options": {"include_usage": True}},
    ) as response:
        payloads = sse_payloads(response.read().decode())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "streamed"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_suffix_is_refused(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"prompt": "x", "suffix": "y"})
    assert response.status_code == 400
