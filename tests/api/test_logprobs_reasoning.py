"""Log probabilities, reasoning budgets and the repetition guard over the API (fake engine)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import openai
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from support.api import HI, REPLY, LiveServer, sse_payloads

Start = Callable[..., LiveServer]
Make = Callable[..., tuple[TestClient, FakeEngine]]


def client_for(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def check_entries(entries: list[Any], top: int) -> None:
    assert entries
    for entry in entries:
        assert entry.logprob <= 0.0
        assert bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == top
        assert sum(math.exp(alt.logprob) for alt in entry.top_logprobs) <= 1.0 + 1e-6
        # The chosen token is the fake model's certain one: present, first among the top.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == entry.logprob


def test_chat_logprobs_with_the_openai_client(live_server: Start) -> None:
    client = client_for(live_server())
    result = client.chat.completions.create(
        model="fake-model", messages=HI, logprobs=True, top_logprobs=3
    )
    logprobs = result.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    check_entries(logprobs.content, 3)
    joined = "".join(e.token for e in logprobs.content)
    assert joined.startswith("<think>") and "The **answer** is 42." in joined


def test_chat_logprobs_streamed(live_server: Start) -> None:
    client = client_for(live_server())
    stream = client.chat.completions.create(
        model="fake-model", messages=HI, logprobs=True, top_logprobs=2, stream=True
    )
    entries = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.logprobs is not None and choice.logprobs.content:
                entries.extend(choice.logprobs.content)
    check_entries(entries, 2)
    assert "".join(e.token for e in entries).startswith("<think>\nLet me think.")


def test_no_logprobs_unless_asked(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json={"messages": HI}).json()
    assert body["choices"][0]["logprobs"] is None


def test_completion_logprobs_legacy_shape(live_server: Start) -> None:
    client = client_for(live_server("plain text here"))
    result = client.completions.create(model="fake-model", prompt="x", logprobs=2, echo=True)
    logprobs = result.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert "".join(logprobs.tokens).startswith("plain text here")
    assert logprobs.text_offset and logprobs.text_offset[0] == 1  # after the echoed "x"
    for top in logprobs.top_logprobs or []:
        assert len(top) <= 2 and sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-6
    streamed = client.completions.create(model="fake-model", prompt="x", logprobs=1, stream=True)
    tokens = [
        token
        for chunk in streamed
        if chunk.choices and chunk.choices[0].logprobs
        for token in chunk.choices[0].logprobs.tokens or []
    ]
    assert "".join(tokens).startswith("plain text here")


def test_reasoning_tokens_in_usage(client: TestClient) -> None:
    usage = client.post("/v1/chat/completions", json={"messages": HI}).json()["usage"]
    # "\nLet", " me", " think.", "\n": the tokens between the tags.
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 4}


def test_budget_ends_the_thinking(make_client: Make) -> None:
    client, _ = make_client(FakeReply(chunks=["<think>", *["hmm "] * 50, "</think>", "Yes."]))
    body = client.post(
        "/v1/chat/completions", json={"messages": HI, "max_reasoning_tokens": 5}
    ).json()
    choice = body["choices"][0]
    assert choice["message"]["reasoning_content"] == ("hmm " * 5).strip()
    assert choice["message"]["content"]  # the answer follows the forced end
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5


def test_effort_none_gives_an_empty_thinking_block(make_client: Make) -> None:
    seen: list[str] = []

    def reply(prompt: str) -> FakeReply:
        seen.append(prompt)
        return FakeReply("The answer." if prompt.endswith("</think>\n\n") else REPLY)

    client, _ = make_client(reply, think_template=True)
    body = client.post(
        "/v1/chat/completions", json={"messages": HI, "reasoning_effort": "none"}
    ).json()
    message = body["choices"][0]["message"]
    assert message["content"] == "The answer." and message["reasoning_content"] is None
    assert seen[-1].endswith("<think>\n</think>\n\n")
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


def test_repetition_guard_ends_a_loop(make_client: Make) -> None:
    loop = FakeReply(chunks=["Let me check. ", "Is it 4? ", "Yes, 4. "], eos=False, repeat=True)
    client, _ = make_client(loop)
    request = {"messages": HI, "max_tokens": 400, "repetition_guard": True}
    body = client.post("/v1/chat/completions", json=request).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "repetition"
    assert body["usage"]["completion_tokens"] < 400
    response = client.post("/v1/chat/completions", json={**request, "stream": True})
    chunks = [json.loads(p) for p in sse_payloads(response.text) if p != "[DONE]"]
    finish = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish[-1]["stop_reason"] == "repetition"
    off = client.post("/v1/chat/completions", json={**request, "repetition_guard": False}).json()
    assert off["choices"][0]["finish_reason"] == "length"
