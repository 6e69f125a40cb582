"""Every conversation route over HTTP, on SQLite and PostgreSQL (fake engine, local mode)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.errors import OverloadedError
from support.api import REPLY, make_settings
from support.conversations import (
    check_wire,
    create,
    detail,
    events_of,
    final_message,
    joined_text,
    post,
    send,
)

Build = Callable[..., TestClient]


@pytest.fixture
def build(make_client: Callable[..., tuple[TestClient, FakeEngine]], database_url: str) -> Build:
    """A client over a fake engine whose app uses this test's database."""

    def start(replies: Any = REPLY, **engine_kwargs: Any) -> TestClient:
        settings = make_settings(database_url=database_url)
        return make_client(replies, settings=settings, **engine_kwargs)[0]

    return start


def test_create_get_rename_and_delete(build: Build) -> None:
    client = build()
    made = create(client, system_prompt="Be brief.", settings={"temperature": 0.2, "seed": 7})
    assert made["title"] == "" and made["model"] == "fake-model"
    assert made["settings"] == {"temperature": 0.2, "seed": 7}
    assert made["active_reply"] is None and made["current_leaf_id"] is None
    cid = made["id"]
    assert detail(client, cid)["messages"] == []
    renamed = client.patch(f"/api/conversations/{cid}", json={"title": "Plans", "settings": {}})
    assert renamed.status_code == 200
    assert (renamed.json()["title"], renamed.json()["settings"]) == ("Plans", {})
    assert client.delete(f"/api/conversations/{cid}").status_code == 204
    assert client.get(f"/api/conversations/{cid}").status_code == 404
    assert client.delete(f"/api/conversations/{cid}").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"settings": {"temperature": "1"}},
        {"settings": {"temperature": -1}},
        {"settings": {"top_p": 0}},
        {"settings": {"max_tokens": 0}},
        {"settings": {"temp": 1}},
        {"title": "x" * 201},
        {"title": 5},
        {"system_prompt": "a\u0000b"},
        {"colour": "blue"},
    ],
)
def test_bad_conversation_fields_are_400(build: Build, body: dict[str, Any]) -> None:
    response = build().post("/api/conversations", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_another_model_is_404(build: Build) -> None:
    response = build().post("/api/conversations", json={"model": "../../etc/passwd"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_message_and_its_streamed_reply_are_stored(build: Build) -> None:
    client = build()
    cid = create(client)["id"]
    events = post(client, cid, "What is the answer?\nThanks")
    check_wire(events)
    start = events[0].json()
    assert start["conversation_id"] == cid and start["dropped_turns"] == 0
    assert start["user_message"]["content"] == "What is the answer?\nThanks"
    assert start["assistant_message"]["status"] == "generating"
    assert joined_text(events) == ("Let me think.", "The **answer** is 42.")
    chunk = events[1].json()
    assert chunk["id"] == f"chatcmpl-{start['assistant_message']['id']}"
    assert chunk["model"] == "fake-model"
    assert events[-3].json()["choices"][0]["finish_reason"] == "stop"
    done = final_message(events)
    assert (done["status"], done["finish_reason"]) == ("complete", "stop")
    assert done["content"] == "The **answer** is 42." and done["reasoning"] == "Let me think."
    assert done["completion_tokens"] > 0 and done["prompt_tokens"] > 0
    stored = detail(client, cid)
    assert stored["title"] == "What is the answer?"
    assert stored["current_leaf_id"] == done["id"]
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1] == done


def test_history_goes_into_the_next_prompt_without_reasoning(build: Build) -> None:
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply(REPLY)

    client = build(reply)
    cid = create(client, system_prompt="SYS")["id"]
    post(client, cid, "first")
    post(client, cid, "second")
    last = prompts[-1]
    assert last.startswith("<|im_start|>system\nSYS<|im_end|>")
    assert last.index("first") < last.index("The **answer** is 42.") < last.index("second")
    assert "Let me think" not in last


def test_settings_shape_the_reply(build: Build) -> None:
    client = build(FakeReply(chunks=[f"w{i} " for i in range(50)]))
    cid = create(client, settings={"max_tokens": 3, "temperature": 0})["id"]
    done = final_message(post(client, cid, "go"))
    assert (done["status"], done["finish_reason"], done["completion_tokens"]) == (
        "complete",
        "length",
        3,
    )


def test_regenerate_edit_and_switching_branches(build: Build) -> None:
    client = build(["A1", "A2", "A1b", "A2e"])
    cid = create(client)["id"]
    first = final_message(post(client, cid, "Q1"))
    second = final_message(post(client, cid, "Q2"))
    assert second["parent_id"] != first["id"] and second["siblings"]["count"] == 1

    path = f"/api/conversations/{cid}/messages/{first['id']}/regenerate"
    regenerated = send(client, path)
    again = final_message(regenerated)
    assert again["content"] == "A1b" and again["parent_id"] == first["parent_id"]
    assert again["siblings"] == {"index": 1, "count": 2, "ids": [first["id"], again["id"]]}
    branch = detail(client, cid)["messages"]
    assert [m["content"] for m in branch] == ["Q1", "A1b"]

    question2 = second["parent_id"]
    edited = send(client, f"/api/conversations/{cid}/messages/{question2}/edit", {"content": "Q2'"})
    start = edited[0].json()
    assert start["user_message"]["content"] == "Q2'"
    assert start["user_message"]["siblings"]["count"] == 2
    assert start["user_message"]["parent_id"] == first["id"]
    assert final_message(edited)["content"] == "A2e"
    assert [m["content"] for m in detail(client, cid)["messages"]] == ["Q1", "A1", "Q2'", "A2e"]

    # Back to the original second question: its branch comes back down to its reply.
    switched = client.patch(f"/api/conversations/{cid}", json={"current_leaf_id": question2})
    assert switched.json()["current_leaf_id"] == second["id"]
    assert [m["content"] for m in detail(client, cid)["messages"]] == ["Q1", "A1", "Q2", "A2"]
    # A message under an explicit parent, and a new root with parent_id null.
    root = final_message(post(client, cid, "fresh start", parent_id=None))
    assert detail(client, cid)["messages"][0]["siblings"]["count"] == 2
    assert root["content"] == "A2e"


def test_wrong_message_kinds_are_400(build: Build) -> None:
    client = build()
    cid = create(client)["id"]
    reply = final_message(post(client, cid, "Q"))
    base = f"/api/conversations/{cid}/messages"
    cases = [
        (f"{base}/{reply['parent_id']}/regenerate", {}),
        (f"{base}/{reply['id']}/edit", {"content": "x"}),
        (base, {"content": "x", "parent_id": reply["parent_id"]}),
        (base, {"content": ""}),
        (base, {"content": "x", "extra": 1}),
    ]
    for path, body in cases:
        response = client.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
    stream = client.get(f"{base}/{reply['parent_id']}/stream")
    assert stream.status_code == 400
    missing = client.post(base, json={"content": "x", "parent_id": "f" * 24})
    assert missing.status_code == 404


def test_old_turns_are_dropped_and_reported(build: Build) -> None:
    client = build(FakeReply("ok " * 20), context_length=400, max_seq_len=400)
    cid = create(client, settings={"max_tokens": 40})["id"]
    dropped = []
    for i in range(8):
        events = post(client, cid, f"question {i} " + "x" * 60)
        dropped.append(events[0].json()["dropped_turns"])
        assert final_message(events)["dropped_turns"] == dropped[-1]
    assert dropped[0] == 0 and dropped[-1] > 0
    assert dropped == sorted(dropped)
    stored = detail(client, cid)["messages"]
    assert stored[-1]["dropped_turns"] == dropped[-1]
    assert stored[-1]["prompt_tokens"] <= 400 - 40
    too_long = client.post(f"/api/conversations/{cid}/messages", json={"content": "y" * 500})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert len(detail(client, cid)["messages"]) == 16  # nothing stored for a refused message


def test_reattach_replays_exactly_what_follows_last_event_id(build: Build) -> None:
    client = build(FakeReply(chunks=["<think>", "a", "bc", "</think>", "dé", "f", "😀g"]))
    cid = create(client)["id"]
    live = post(client, cid, "go")
    reasoning, content = joined_text(live)
    assert (reasoning, content) == ("abc", "déf😀g")
    mid = final_message(live)["id"]
    path = f"/api/conversations/{cid}/messages/{mid}/stream"
    replay = events_of(client.get(path).text)
    check_wire(replay)
    assert joined_text(replay) == (reasoning, content)
    assert replay[-1].id == live[-1].id and replay[-2].id == live[-2].id
    whole = reasoning + content
    length = len(whole)
    assert [e.id for e in live[-3:]] == [length + 1, length + 2, length + 3]
    for last in range(length + 4):
        after = events_of(client.get(path, headers={"Last-Event-ID": str(last)}).text)
        # From storage the text comes as one chunk; its id and the ones after match live ids.
        text_ids = [length] if last < length else []
        # done and [DONE] always come: every reattach ends well-formed.
        assert [e.id for e in after] == text_ids + [
            i for i in range(length + 1, length + 4) if i > last or i >= length + 2
        ]
        assert "".join(joined_text(after)) == whole[last:]
        assert _names(after)[-2:] == _names(live)[-2:]
    for bad in ("abc", "-1", "1e3", "9" * 30):
        assert client.get(path, headers={"Last-Event-ID": bad}).status_code == 400


def test_reattach_past_the_saved_text_gets_a_clean_done(build: Build) -> None:
    """After a crash a client may have seen text that was never saved (#14)."""
    client = build(FakeReply(chunks=["<think>", "a", "</think>", "bc"]))
    cid = create(client)["id"]
    live = post(client, cid, "go")
    mid = final_message(live)["id"]
    path = f"/api/conversations/{cid}/messages/{mid}/stream"
    past = events_of(client.get(path, headers={"Last-Event-ID": str(live[-1].id + 40)}).text)
    assert _names(past) == _names(live)[-2:]  # done, then [DONE]
    assert past[-1].data == "[DONE]"
    assert final_message(past) == final_message(live)


def _names(events: Any) -> list[str | None]:
    return [event.name for event in events]


def test_engine_errors_are_stored(build: Build) -> None:
    client = build(FakeReply(chunks=[f"w{i} " for i in range(40)]))
    engine: FakeEngine = client.app.state.engine  # type: ignore[attr-defined]
    calls = 0
    decode = engine.fake_runner.decode

    def failing(inputs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise RuntimeError("GPU fell off")
        return decode(inputs)

    engine.fake_runner.decode = failing  # type: ignore[method-assign]
    cid = create(client)["id"]
    events = post(client, cid, "go")
    assert events[-2].name == "error"
    error = events[-2].json()
    assert "model failed" in error["error"]["message"] and "GPU" not in events[-2].data
    assert error["message"]["status"] == "error" and error["message"]["content"].startswith("w0")
    assert detail(client, cid)["messages"][-1]["status"] == "error"


def test_an_overloaded_engine_stores_a_failed_reply(build: Build) -> None:
    client = build()
    engine: FakeEngine = client.app.state.engine  # type: ignore[attr-defined]

    async def full(request: Any) -> Any:
        raise OverloadedError("server busy: the waiting queue is full", retry_after=2)

    engine.submit = full  # type: ignore[method-assign]
    cid = create(client)["id"]
    events = post(client, cid, "hello")
    assert [e.name for e in events] == ["start", "error", None]
    assert events[1].json()["error"]["type"] == "server_overloaded"
    messages = detail(client, cid)["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "error"),
    ]


def test_list_search_and_paging(build: Build) -> None:
    client = build()
    ids = [create(client, title=f"Trip {i}")["id"] for i in range(3)]
    found = create(client)["id"]
    post(client, found, "Where is Zürich?")
    page = client.get("/api/conversations", params={"limit": 2}).json()
    assert [c["id"] for c in page["data"]] == [found, ids[2]]
    rest = client.get("/api/conversations", params={"limit": 2, "before": page["next_before"]})
    assert [c["id"] for c in rest.json()["data"]] == [ids[1], ids[0]]
    assert rest.json()["next_before"] is None
    search = client.get("/api/conversations", params={"q": "zÜRICH"}).json()
    assert [c["id"] for c in search["data"]] == [found]
    assert client.get("/api/conversations", params={"before": "nonsense"}).status_code == 400
    assert client.get("/api/conversations", params={"limit": 0}).status_code == 400


def test_export_and_import_round_trip(build: Build) -> None:
    client = build()
    cid = create(client, title="Notes")["id"]
    post(client, cid, "remember this")
    one = client.get(f"/api/conversations/{cid}/export")
    assert one.status_code == 200
    assert one.headers["content-disposition"] == f'attachment; filename="conversation-{cid}.json"'
    markdown = client.get(f"/api/conversations/{cid}/export", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "# Notes" in markdown.text and "remember this" in markdown.text
    every = client.get("/api/conversations/export")
    assert [c["id"] for c in every.json()["conversations"]] == [cid]
    imported = client.post("/api/conversations/import", content=one.content)
    assert imported.status_code == 200
    [copy] = imported.json()["imported"]
    copied, original = detail(client, copy), detail(client, cid)
    assert [m["content"] for m in copied["messages"]] == [
        m["content"] for m in original["messages"]
    ]
    bad = client.post("/api/conversations/import", content=json.dumps({"format": "x"}))
    assert bad.status_code == 400 and "not a conversation export" in bad.text
    assert client.get("/api/conversations/export", params={"format": "pdf"}).status_code == 400
    assert len(client.get("/api/conversations").json()["data"]) == 2
