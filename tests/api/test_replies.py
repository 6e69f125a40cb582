"""Replies that outlive their connection, on a real uvicorn server and both databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from r1serve.conversations import current_worker
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.storage.models import Message
from support.api import LiveServer, make_settings, wait_for
from support.conversations import (
    Event,
    create,
    detail,
    events_of,
    final_message,
    iter_events,
    joined_text,
    take,
)

CHUNKS = ["<think>", *[f"r{i} " for i in range(10)], "</think>", *[f"w{i} " for i in range(60)]]
SLOW = FakeReply(chunks=CHUNKS, delay_s=0.03)
FULL_REASONING = "".join(f"r{i} " for i in range(10)).strip()
FULL_CONTENT = "".join(f"w{i} " for i in range(60))
Start = Callable[..., LiveServer]


@pytest.fixture
def start(live_server: Start, database_url: str) -> Start:
    """A live server over this test's database."""

    def run(replies: Any = SLOW, **engine_kwargs: Any) -> LiveServer:
        return live_server(replies, make_settings(database_url=database_url), **engine_kwargs)

    return run


@contextmanager
def streaming(
    http: httpx.Client, method: str, path: str, **kwargs: Any
) -> Iterator[Iterator[Event]]:
    with http.stream(method, path, **kwargs) as response:
        assert response.status_code == 200, response.read()
        yield iter_events(response.iter_lines())


def _message_path(cid: str) -> str:
    return f"/api/conversations/{cid}/messages"


def _stored(http: httpx.Client, cid: str) -> dict[str, Any]:
    return detail(http, cid)["messages"][-1]


def _finished(http: httpx.Client, cid: str) -> Callable[[], bool]:
    return lambda: _stored(http, cid)["status"] != "generating"


def test_disconnecting_never_stops_the_reply(start: Start) -> None:
    server = start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        cid = create(http)["id"]
        with streaming(http, "POST", _message_path(cid), json={"content": "go"}) as events:
            begun = take(events, 4)
        mid = begun[0].json()["assistant_message"]["id"]
        assert wait_for(_finished(http, cid), timeout=20)
        stored = _stored(http, cid)
    assert (stored["id"], stored["status"], stored["finish_reason"]) == (mid, "complete", "stop")
    assert (stored["reasoning"], stored["content"]) == (FULL_REASONING, FULL_CONTENT)
    assert wait_for(lambda: server.engine.finished.get(f"conv-{mid}-0") == "stop")


def test_reattach_gets_exactly_the_missed_events(start: Start) -> None:
    server = start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        cid = create(http)["id"]
        with streaming(http, "POST", _message_path(cid), json={"content": "go"}) as events:
            seen = take(events, 8)
        mid = seen[0].json()["assistant_message"]["id"]
        stream = f"{_message_path(cid)}/{mid}/stream"
        last = seen[-1].id
        with streaming(http, "GET", stream, headers={"Last-Event-ID": str(last)}) as events:
            rest = list(events)
        with streaming(http, "GET", stream) as events:  # a second reader from the start
            everything = list(events)
    assert rest[0].id > last and rest[-1].data == "[DONE]"
    assert [e.id for e in rest] == sorted({e.id for e in rest})
    before, after = joined_text(seen), joined_text(rest)
    assert (before[0] + after[0], before[1] + after[1]) == (FULL_REASONING, FULL_CONTENT)
    assert joined_text(everything) == (FULL_REASONING, FULL_CONTENT)
    assert final_message(rest)["status"] == final_message(everything)["status"] == "complete"


def test_stop_ends_the_reply_and_aborts_the_engine(start: Start) -> None:
    server = start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        cid = create(http)["id"]
        with streaming(http, "POST", _message_path(cid), json={"content": "go"}) as events:
            seen = take(events, 6)
            mid = seen[0].json()["assistant_message"]["id"]
            stopped = http.post(f"{_message_path(cid)}/{mid}/stop")
            rest = list(events)
        assert stopped.status_code == 200, stopped.text
        message = stopped.json()
        assert (message["status"], message["finish_reason"]) == ("stopped", "abort")
        assert FULL_CONTENT.startswith(message["content"]) and message["content"] != FULL_CONTENT
        assert final_message(rest) == message
        assert _stored(http, cid) == message
        again = http.post(f"{_message_path(cid)}/{mid}/stop")
        assert again.json() == message
        assert detail(http, cid)["active_reply"] is None
    assert wait_for(lambda: server.engine.finished.get(f"conv-{mid}-0") == "abort")
    assert wait_for(lambda: server.engine.stats().running == 0)


def test_one_reply_at_a_time_per_conversation(start: Start) -> None:
    server = start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        cid = create(http)["id"]
        with streaming(http, "POST", _message_path(cid), json={"content": "go"}) as events:
            first = take(events, 3)[0].json()
            mid, question = first["assistant_message"]["id"], first["user_message"]["id"]
            assert detail(http, cid)["active_reply"] == {"message_id": mid, "status": "generating"}
            busy = [
                http.post(_message_path(cid), json={"content": "again"}),
                http.post(f"{_message_path(cid)}/{mid}/regenerate"),
                http.post(f"{_message_path(cid)}/{question}/edit", json={"content": "x"}),
            ]
            for response in busy:
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == "reply_in_progress"
            http.post(f"{_message_path(cid)}/{mid}/stop")
        after = http.post(_message_path(cid), json={"content": "now"})
        assert after.status_code == 200
        assert len(detail(http, cid)["messages"]) == 4


def test_replies_in_different_conversations_run_together(start: Start) -> None:
    server = start(FakeReply(chunks=[f"t{i} " for i in range(30)], delay_s=0.02))
    results: dict[int, list[Event]] = {}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ids = [create(http)["id"] for _ in range(3)]

        def talk(index: int) -> None:
            response = http.post(_message_path(ids[index]), json={"content": f"hi {index}"})
            results[index] = events_of(response.text)

        workers = [threading.Thread(target=talk, args=(i,)) for i in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for index, conversation in enumerate(ids):
            assert final_message(results[index])["status"] == "complete"
            assert _stored(http, conversation)["content"] == "".join(f"t{i} " for i in range(30))
    assert server.engine.fake_runner.max_active == 3


def _count_message_updates(server: LiveServer) -> list[str]:
    writes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE MESSAGES"):
            writes.append(statement)

    event.listen(server.accounts.database.engine, "before_cursor_execute", count)
    return writes


def test_fast_replies_are_saved_in_batches_not_per_token(start: Start) -> None:
    server = start(FakeReply(chunks=[f"x{i} " for i in range(300)]))
    writes = _count_message_updates(server)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        cid = create(http)["id"]
        began = time.monotonic()
        done = final_message(events_of(http.post(_message_path(cid), json={"content": "go"}).text))
        elapsed = time.monotonic() - began
    assert done["completion_tokens"] == 301 and done["status"] == "complete"
    # Every 32 tokens, or every 0.5 s where a busy machine makes the reply slow: never per token.
    assert 1 <= len(writes) <= 300 // 32 + elapsed / 0.5 + 3, (len(writes), elapsed)
    assert len(writes) < 301 // 4


def test_slow_replies_are_saved_as_they_go(start: Start) -> None:
    server = start(FakeReply(chunks=[f"s{i} " for i in range(40)], delay_s=0.05))
    writes = _count_message_updates(server)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        cid = create(http)["id"]
        began = time.monotonic()
        with streaming(http, "POST", _message_path(cid), json={"content": "go"}) as events:
            take(events, 2)
            # Without reading further, the saved text grows while it is generated.
            assert wait_for(lambda: _stored(http, cid)["content"].startswith("s0 s1"), timeout=5)
            assert _stored(http, cid)["status"] == "generating"
            rest = list(events)
    assert final_message(rest)["status"] == "complete"
    # About every 0.5 s over the reply's ~2 s (longer on a busy machine), then the end.
    most = (time.monotonic() - began) / 0.5 + 41 // 32 + 3
    assert 3 <= len(writes) <= most, (len(writes), most)


def test_shutdown_saves_running_replies_as_incomplete(database_url: str) -> None:
    settings = make_settings(database_url=database_url)
    server = LiveServer(FakeEngine(SLOW), settings).__enter__()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            cid = create(http)["id"]
            with streaming(http, "POST", _message_path(cid), json={"content": "go"}) as events:
                mid = take(events, 5)[0].json()["assistant_message"]["id"]
    finally:
        server.__exit__()
    restarted = LiveServer(FakeEngine(SLOW), settings).__enter__()
    try:
        with httpx.Client(base_url=restarted.url, timeout=30) as http:
            stored = _stored(http, cid)
            assert (stored["id"], stored["status"]) == (mid, "incomplete")
            assert stored["reasoning"] and FULL_REASONING.startswith(stored["reasoning"])
            assert stored["content"] != FULL_CONTENT
            replay = events_of(http.get(f"{_message_path(cid)}/{mid}/stream").text)
            assert final_message(replay)["status"] == "incomplete"
    finally:
        restarted.__exit__()


def test_a_second_replica_follows_and_stops_a_reply(database_url: str) -> None:
    settings = make_settings(database_url=database_url)
    with (
        LiveServer(FakeEngine(SLOW), settings) as writer,
        LiveServer(FakeEngine(SLOW), make_settings(database_url=database_url)) as other,
        httpx.Client(base_url=writer.url, timeout=30) as first,
        httpx.Client(base_url=other.url, timeout=30) as second,
    ):
        cid = create(first)["id"]
        with streaming(first, "POST", _message_path(cid), json={"content": "go"}) as events:
            mid = take(events, 3)[0].json()["assistant_message"]["id"]
            stream = f"{_message_path(cid)}/{mid}/stream"
            with streaming(second, "GET", stream) as followed:
                take(followed, 3)  # start and text, polled from the database
                stopped = second.post(f"{_message_path(cid)}/{mid}/stop")
                assert stopped.status_code == 200
                assert stopped.json()["status"] == "stopped"
                tail = list(followed)
            list(events)
        assert final_message(tail)["status"] == "stopped"
        assert _stored(first, cid)["status"] == "stopped"
    assert wait_for(lambda: writer.engine.finished.get(f"conv-{mid}-0") == "abort")


def test_a_start_marks_replies_of_a_dead_server_incomplete(
    make_client: Callable[..., tuple[Any, FakeEngine]], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    client = make_client(settings=settings)[0]
    cid = create(client)["id"]
    reply = final_message(events_of(client.post(_message_path(cid), json={"content": "q"}).text))
    host = current_worker().split("/")[0]
    with client.app.state.accounts.database.write() as session:  # type: ignore[attr-defined]
        row = session.get(Message, reply["id"])
        row.status, row.worker, row.content = "generating", f"{host}/{2**22 + 7}/1", "half"
    assert detail(client, cid)["active_reply"] == {
        "message_id": reply["id"],
        "status": "generating",
    }
    restarted = make_client(settings=make_settings(database_url=database_url))[0]
    stored = detail(restarted, cid)
    assert (stored["messages"][-1]["status"], stored["messages"][-1]["content"]) == (
        "incomplete",
        "half",
    )
    assert stored["active_reply"] is None


def test_deleting_a_conversation_stops_its_reply(start: Start) -> None:
    server = start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        cid = create(http)["id"]
        with streaming(http, "POST", _message_path(cid), json={"content": "go"}) as events:
            mid = take(events, 4)[0].json()["assistant_message"]["id"]
            assert http.delete(f"/api/conversations/{cid}").status_code == 204
            rest = list(events)
        assert rest[-1].data == "[DONE]" and final_message(rest)["status"] == "stopped"
        assert http.get(f"/api/conversations/{cid}").status_code == 404
    assert wait_for(lambda: server.engine.finished.get(f"conv-{mid}-0") == "abort")
