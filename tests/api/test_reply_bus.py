"""The Redis reply bus between replicas, on the local Redis: event streams, relayed followers,
Stop across managers. Two ``ReplyManager``s with buses of their own stand for two replicas on
one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from r1serve.api.reply_bus import ReplyBus, check_redis, decode_event, encode_event, shown_url
from r1serve.api.reply_relay import RelayedReply, after_offset, text_between
from r1serve.api.service import Output
from r1serve.conversations import (
    ConversationDraft,
    ConversationStore,
    MessageRecord,
    ReplyPlan,
    ReplyProgress,
    new_id,
)
from r1serve.conversations.records import Siblings
from r1serve.conversations.replies import ReplyManager
from r1serve.conversations.reply_events import ReplyEvent, final_events
from r1serve.errors import ConfigError
from r1serve.storage import Database
from r1serve.storage.repositories import UserRepository
from support.api import free_port
from support.replicas import redis_prefix

WORDS = ["Let ", "me ", "think ", "a ", "while. "] * 8


@pytest.fixture
def bus_target() -> Iterator[tuple[str, str]]:
    with redis_prefix() as target:
        yield target


def _text(events: list[ReplyEvent]) -> str:
    return "".join(e.reasoning + e.content for e in events if e.kind == "chunk")


def _chunks_contiguous(events: list[ReplyEvent]) -> None:
    """Each chunk starts where the previous one ended: nothing lost, nothing twice."""
    position = 0
    for event in events:
        if event.kind == "chunk":
            assert event.offset == position, (event, position)
            position = event.id


def test_events_survive_the_round_trip_through_json() -> None:
    events = [
        ReplyEvent(0, "start", data={"conversation_id": "c", "text": "日本 ✓"}),
        ReplyEvent(9, "chunk", reasoning="思考\n", content='"quoted" \\ '),
        ReplyEvent(10, "finish", finish_reason="tool_calls",
                   tool_calls=({"id": "call_1", "type": "function",
                                "function": {"name": "f", "arguments": "{}"}},)),
        ReplyEvent(11, "done", data={"message": None}),
        ReplyEvent(12, "end"),
    ]  # fmt: skip
    assert [decode_event(encode_event(e)) for e in events] == events
    with pytest.raises(ValueError):
        decode_event('{"i": 1, "k": "bogus"}')


def test_check_redis_says_which_url_does_not_answer_and_hides_its_password() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError) as caught:
        check_redis(url, timeout_s=2)
    message = caught.value.message
    assert "does not answer" in message and "--redis-url" in message
    assert "s3cret" not in message and "***" in message
    assert shown_url("redis://cache:6379/1") == "redis://cache:6379/1"
    with pytest.raises(ConfigError, match="not a Redis URL"):
        check_redis("http://cache:6379")

    async def connect() -> None:
        await ReplyBus.connect(url, "p:")

    with pytest.raises(ConfigError, match="does not answer"):
        asyncio.run(connect())


def test_a_feed_publishes_in_order_and_the_stream_expires(bus_target: tuple[str, str]) -> None:
    url, prefix = bus_target

    async def scenario() -> None:
        bus = await ReplyBus.connect(url, prefix)
        try:
            # An earlier generation of the message (a reply later continued) is dropped.
            await bus.append("m1", [ReplyEvent(0, "start", data={}), ReplyEvent(9, "end")])
            feed = bus.feed("m1")
            feed.put(ReplyEvent(0, "start", data={"again": True}))
            for i in range(1, 301):
                feed.put(ReplyEvent(i, "chunk", content="x"))
                if i % 50 == 0:
                    await asyncio.sleep(0)  # batches of different sizes
            feed.put(ReplyEvent(302, "end"))
            await feed.close()
            position, got = "0", []
            while True:
                position, events = await bus.read("m1", position, None)
                if not events:
                    break
                got += events
            assert [e.id for e in got] == [0, *range(1, 301), 302]
            assert got[0].data == {"again": True} and got[1].content == "x"
            ttl = await bus.client.ttl(bus.stream_key("m1"))
            assert 0 < ttl <= 300  # ended: kept only for late followers
        finally:
            await bus.close()

    asyncio.run(scenario())


def _conversation(store: ConversationStore, database: Database) -> tuple[int, str]:
    with database.write() as session:
        user = UserRepository(session).add("ada", "hash", "user").id
    return user, store.create(user, ConversationDraft()).id


def _plan(worker: str) -> ReplyPlan:
    return ReplyPlan(new_id(), "m", 3, 0, worker, user_message_id=new_id(), user_content="q")


async def _slow_words(delay_s: float, stop_after: int | None = None) -> AsyncIterator[Output]:
    """Reasoning first, then the answer, a word at a time; ``stop_after``: no end."""
    for i, word in enumerate(WORDS):
        await asyncio.sleep(delay_s)
        if i < len(WORDS) // 2:
            yield Output(0, reasoning=word, tokens=1)
        else:
            yield Output(0, content=word, tokens=1)
    if stop_after is not None:
        await asyncio.Event().wait()
    yield Output(0, finish_reason="stop")


def test_a_follower_on_another_replica_gets_every_character_once_with_the_writers_ids(
    database: Database, bus_target: tuple[str, str]
) -> None:
    """Saved text from the database, then the writer's events from Redis: the relayed stream
    is the writer's own, re-cut where the saved text ends (its ids are among the writer's)."""
    url, prefix = bus_target
    store = ConversationStore(database)

    async def scenario() -> None:
        bus_a, bus_b = await ReplyBus.connect(url, prefix), await ReplyBus.connect(url, prefix)
        writer = ReplyManager(store, bus=bus_a, flush_tokens=3, flush_interval_s=0.02,
                              sweep_interval_s=3600)  # fmt: skip
        await writer.start()
        user, cid = _conversation(store, database)
        started = store.begin_reply(user, cid, _plan(writer.worker))
        mid = started.assistant_message.id
        reply = writer.launch(started, _slow_words(0.01))
        for _ in range(500):  # follow once part of the text is saved
            await asyncio.sleep(0.01)
            if len(store.message(user, cid, mid).reasoning) > 10:
                break
        saved = store.message(user, cid, mid)
        assert saved.status == "generating" and saved.reasoning

        async def reload() -> MessageRecord:
            return store.message(user, cid, mid)

        relayed = RelayedReply(bus_b, cid, started.user_message, saved, reload, poll_s=0.05)
        got = [event async for event in relayed.events()]
        local = [event async for event in reply.subscribe()]
        final = await reply.wait()
        assert final is not None and final.status == "complete"
        assert _text(got) == _text(local) == final.reasoning + final.content
        _chunks_contiguous(got)
        assert got[0].kind == "start" and got[0].data == local[0].data
        assert [e.kind for e in got[-3:]] == ["finish", "done", "end"]
        assert got[-3:] == local[-3:]  # same ids, same final message
        assert {e.id for e in got} <= {e.id for e in local}
        assert len([e for e in got if e.kind == "chunk"]) > 2  # live events, not only the DB
        await writer.close()
        await bus_a.close()
        await bus_b.close()

    asyncio.run(scenario())


def test_a_stop_published_on_one_replica_stops_the_reply_on_the_other(
    database: Database, bus_target: tuple[str, str]
) -> None:
    """The writer never saves (so never reads the database's stop flag): Redis alone stops it,
    and a Stop that arrives before the reply is registered is kept for it."""
    url, prefix = bus_target
    store = ConversationStore(database)

    async def scenario() -> None:
        bus_a, bus_b = await ReplyBus.connect(url, prefix), await ReplyBus.connect(url, prefix)
        quiet = {"flush_tokens": 10**9, "flush_interval_s": 3600.0, "heartbeat_s": 3600.0}
        writer = ReplyManager(store, bus=bus_a, sweep_interval_s=3600, **quiet)
        other = ReplyManager(store, bus=bus_b, sweep_interval_s=3600)
        await writer.start()
        await other.start()
        user, cid = _conversation(store, database)
        started = store.begin_reply(user, cid, _plan(writer.worker))
        reply = writer.launch(started, _slow_words(0.001, stop_after=0))
        events = reply.subscribe()
        while (await anext(events)).kind != "chunk":
            pass
        assert await bus_b.request_stop(reply.message_id) >= 2  # both replicas listen
        final = await asyncio.wait_for(reply.wait(), 30)
        assert final is not None and final.status == "stopped"
        assert final.reasoning  # kept as written so far

        early = store.begin_reply(user, cid, _plan(writer.worker))
        await bus_b.request_stop(early.assistant_message.id)
        for _ in range(200):  # until the writer has heard it
            await asyncio.sleep(0.01)
            if early.assistant_message.id in writer._early_stops:
                break
        second = writer.launch(early, _slow_words(0.001, stop_after=0))
        final = await asyncio.wait_for(second.wait(), 30)
        assert final is not None and final.status == "stopped"
        for manager in (writer, other):
            await manager.close()
        await bus_a.close()
        await bus_b.close()

    asyncio.run(scenario())


def test_a_gap_in_the_stream_is_filled_from_the_database_and_a_dead_writer_ends_it(
    database: Database, bus_target: tuple[str, str]
) -> None:
    """Events lost before Redis (a trimmed stream start, a failed publish) come from the saved
    text; a stream that falls silent while the database says the reply ended (its writer died
    and a sweep marked it) ends with the stored reply."""
    url, prefix = bus_target
    store = ConversationStore(database)

    async def scenario() -> None:
        bus = await ReplyBus.connect(url, prefix)
        user, cid = _conversation(store, database)
        started = store.begin_reply(user, cid, _plan("w"))
        mid = started.assistant_message.id
        store.save_progress(mid, ReplyProgress("", "abc", 3, ()))
        # The stream lost the chunks up to 6 ("abcdef"): only "ghi" reached it.
        await bus.append(mid, [ReplyEvent(9, "chunk", reasoning="ghi")])

        async def reload() -> MessageRecord:
            return store.message(user, cid, mid)

        saved = store.message(user, cid, mid)
        relayed = RelayedReply(bus, cid, started.user_message, saved, reload, poll_s=0.02)
        events = relayed.events()
        assert (await anext(events)).kind == "start"
        assert (await anext(events)).reasoning == "abc"  # the saved text
        filling = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.1)
        assert not filling.done()  # "def" is not saved yet: it waits for it
        store.save_progress(mid, ReplyProgress("", "abcdefgh", 8, ()))
        filler = await asyncio.wait_for(filling, 10)
        assert (filler.id, filler.reasoning) == (6, "def")
        assert (await anext(events)).reasoning == "ghi"
        # The writer dies; a sweep marks the reply incomplete with what it had saved.
        store.save_progress(mid, ReplyProgress("jk", "abcdefghi", 11, ()))
        assert store.sweep(lease_s=3600, is_gone=lambda worker: True) == [mid]
        rest = [event async for event in events]
        assert [(e.id, e.kind, e.content) for e in rest] == [
            (11, "chunk", "jk"), (13, "done", ""), (14, "end", "")
        ]  # fmt: skip
        assert rest[1].data is not None and rest[1].data["message"]["status"] == "incomplete"
        await bus.close()

    asyncio.run(scenario())


def test_text_cuts_agree_with_the_event_ids() -> None:
    message = _message(reasoning="abc", content="de")
    assert text_between(message, 1, 4) == ReplyEvent(4, "chunk", reasoning="bc", content="d")
    assert text_between(message, 3) == ReplyEvent(5, "chunk", content="de")
    assert text_between(message, 5) is None
    chunk = ReplyEvent(5, "chunk", reasoning="bc", content="de")  # offset 1
    assert after_offset(chunk, 2) == ReplyEvent(5, "chunk", reasoning="c", content="de")
    assert after_offset(chunk, 4) == ReplyEvent(5, "chunk", content="e")
    assert final_events(5, None, None)[-1] == ReplyEvent(8, "end")


def _message(reasoning: str, content: str) -> MessageRecord:
    return MessageRecord(
        id="m", conversation_id="c", parent_id="p", role="assistant", content=content,
        reasoning=reasoning, status="generating", finish_reason=None, error=None,
        prompt_tokens=3, completion_tokens=0, reasoning_seconds=None, dropped_turns=0,
        created_at=datetime.now(UTC), finished_at=None, siblings=Siblings(0, ("m",)),
    )  # fmt: skip


def test_start_up_output_never_shows_a_redis_password() -> None:
    from r1serve.api.server import changed_settings
    from r1serve.settings import Settings

    settings = Settings(redis_url="redis://:s3cret@cache:6379/0", _env_file=None)  # type: ignore[call-arg]
    lines = changed_settings(settings, ["redis_url"])
    assert "redis_url = redis://:***@cache:6379/0 (flag)" in lines
    assert not any("s3cret" in line for line in lines)
