"""Chat completions over the fake engine: the wire format, reasoning split, sampling fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from support.api import REPLY, chat, make_settings, sse_payloads, stream_chat

Build = Callable[..., tuple[TestClient, FakeEngine]]


def test_reply_splits_reasoning_from_answer(client: TestClient) -> None:
    body = chat(client)
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"] == "The **answer** is 42."
    assert message["reasoning_content"] == "Let me think."
    assert message["reasoning"] == "Let me think."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-model"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > 0


def test_stream_wire_format(client: TestClient) -> None:
    payloads = stream_chat(client, stream_options={"include_usage": True})
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    first = chunks[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[1:] if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "The **answer** is 42."
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think."
    assert all(d.get("reasoning") == d.get("reasoning_content") for d in deltas)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0


def test_stream_has_no_usage_unless_asked(client: TestClient) -> None:
    chunks = [json.loads(p) for p in stream_chat(client)[:-1]]
    assert all("usage" not in c for c in chunks)


def test_template_that_opens_think_is_split(make_client: Build) -> None:
    client, _ = make_client("Pondering.\n</think>\n\nDone.", think_template=True)
    message = chat(client)["choices"][0]["message"]
    assert message["reasoning_content"] == "Pondering."
    assert message["content"] == "Done."


def test_reply_without_reasoning(make_client: Build) -> None:
    client, _ = make_client("Just an answer.")
    message = chat(client)["choices"][0]["message"]
    assert message["content"] == "Just an answer."
    assert message["reasoning_content"] is None


def test_unclosed_think_at_max_tokens(make_client: Build) -> None:
    client, _ = make_client(FakeReply(chunks=["<think>", "a", " b", " c", " d"], eos=False))
    body = chat(client, max_tokens=3)
    message = body["choices"][0]
    assert message["finish_reason"] == "length"
    assert message["message"]["reasoning_content"] == "a b"
    assert message["message"]["content"] == ""


def test_tags_split_across_chunks(make_client: Build) -> None:
    chunks = ["<th", "ink>", "why", "</", "thi", "nk>", "\n\nso"]
    client, _ = make_client(FakeReply(chunks=chunks))
    message = chat(client)["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("why", "so")


def test_raw_reasoning_format_keeps_tags(make_client: Build) -> None:
    client, _ = make_client(REPLY, settings=make_settings(reasoning_format="raw"))
    message = chat(client)["choices"][0]["message"]
    assert message["content"] == REPLY
    assert message["reasoning_content"] is None


def test_raw_format_restores_tag_the_template_opened(make_client: Build) -> None:
    settings = make_settings(reasoning_format="raw")
    client, _ = make_client("Hm.\n</think>\n\nOk.", settings=settings, think_template=True)
    content = chat(client)["choices"][0]["message"]["content"]
    assert content == "<think>\nHm.\n</think>\n\nOk."


def test_earlier_reasoning_never_reaches_the_prompt(make_client: Build) -> None:
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply("ok")

    client, _ = make_client(reply)
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>secret plan</think>answer one",
         "reasoning_content": "secret plan"},
        {"role": "user", "content": "q2"},
    ]  # fmt: skip
    chat(client, messages=messages)
    assert "secret plan" not in prompts[-1]
    assert "answer one" in prompts[-1]


def test_stop_string_across_chunks_is_not_emitted(make_client: Build) -> None:
    client, _ = make_client(FakeReply(chunks=["Hel", "lo wo", "rld", " again"]))
    body = chat(client, stop=["lo w", "zzz"])
    assert body["choices"][0]["message"]["content"] == "Hel"
    assert body["choices"][0]["finish_reason"] == "stop"
    payloads = stream_chat(client, stop="o wor")
    text = "".join(json.loads(p)["choices"][0]["delta"].get("content", "") for p in payloads[:-1])
    assert text == "Hell"


def test_max_tokens_gives_length(make_client: Build) -> None:
    client, _ = make_client(FakeReply(chunks=["a", "b", "c", "d", "e"]))
    body = chat(client, max_tokens=2)
    assert body["choices"][0]["message"]["content"] == "ab"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_n_choices(make_client: Build) -> None:
    client, _ = make_client(["one", "two"])
    body = chat(client, n=2)
    assert sorted(c["message"]["content"] for c in body["choices"]) == ["one", "two"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    payloads = stream_chat(client, n=2)
    indexes = {json.loads(p)["choices"][0]["index"] for p in payloads[:-1]}
    assert indexes == {0, 1}


def test_unknown_fields_are_accepted(client: TestClient) -> None:
    body = chat(client, reasoning_effort="high", some_future_field={"x": 1})
    assert body["choices"][0]["finish_reason"] == "stop"


def test_multibyte_text_streams_whole_characters(make_client: Build) -> None:
    text = "你好🙂世界"
    data = text.encode()
    chunks: list[Any] = [data[i : i + 1] for i in range(len(data))]  # one byte per token
    client, _ = make_client(FakeReply(chunks=chunks))
    payloads = stream_chat(client)
    pieces = [json.loads(p)["choices"][0]["delta"].get("content", "") for p in payloads[:-1]]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_sse_framing_is_plain_lines(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "stream": True,
    }) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    assert body.endswith("data: [DONE]\n\n")
    assert sse_payloads(body)[0].startswith("{")


def test_models_list_and_get(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["fake-model"]
    assert client.get("/v1/models/fake-model").json()["id"] == "fake-model"
    missing = client.get("/v1/models/other")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


def test_served_model_name_and_wrong_model(make_client: Build) -> None:
    client, _ = make_client(model_name="my-model")
    assert chat(client, model="my-model")["model"] == "my-model"
    response = client.post("/v1/chat/completions", json={
        "model": "other", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"] == "fake-model"


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Request-ID": "my-req-1"},
    )
    assert response.json()["id"] == "chatcmpl-my-req-1"
    assert client.get("/health", headers={"X-Request-ID": "bad id!"}).headers["x-request-id"]
