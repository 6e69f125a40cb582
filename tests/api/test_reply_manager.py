"""ReplyManager without HTTP: heartbeats while waiting, subscribers, shutdown, the sweeper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from r1serve.conversations import ConversationDraft, ConversationStore, ReplyPlan, new_id
from r1serve.conversations.replies import ReplyManager
from r1serve.generation import Output
from r1serve.storage import Database
from r1serve.storage.models import Message
from r1serve.storage.repositories import UserRepository


def _started(
    store: ConversationStore, database: Database, worker: str = "w"
) -> tuple[int, str, ReplyPlan]:
    with database.write() as session:
        user = UserRepository(session).add("ada", "hash", "user").id
    cid = store.create(user, ConversationDraft()).id
    plan = ReplyPlan(new_id(), "m", 3, 0, worker, user_message_id=new_id(), user_content="q")
    return user, cid, plan


async def _waiting_forever(closed: asyncio.Event) -> AsyncIterator[Output]:
    """An engine stream whose request waits in the queue and never produces anything."""
    try:
        await asyncio.Event().wait()
        yield Output(0)
    finally:
        closed.set()


def test_a_waiting_reply_heartbeats_and_shutdown_saves_it_incomplete(database: Database) -> None:
    store = ConversationStore(database)

    async def scenario() -> None:
        manager = ReplyManager(store, heartbeat_s=0.05, sweep_interval_s=3600)
        await manager.start()
        user, cid, plan = _started(store, database, manager.worker)
        started = store.begin_reply(user, cid, plan)
        closed = asyncio.Event()
        reply = manager.launch(started, _waiting_forever(closed))
        before = store.message(user, cid, reply.message_id)
        await asyncio.sleep(0.3)
        with database.read() as session:
            beat = session.get(Message, reply.message_id)
            assert beat is not None and beat.heartbeat_at is not None
            assert before.created_at < beat.heartbeat_at  # saved while nothing was generated
        await manager.close()
        assert closed.is_set()  # the engine stream was closed: the request is aborted
        final = store.message(user, cid, reply.message_id)
        assert (final.status, final.finish_reason) == ("incomplete", "abort")
        assert manager.running == 0

    asyncio.run(scenario())


def test_subscribers_come_and_go_without_touching_the_reply(database: Database) -> None:
    store = ConversationStore(database)

    async def outputs(gate: asyncio.Event) -> AsyncIterator[Output]:
        yield Output(0, content="one ", tokens=1)
        await gate.wait()
        yield Output(0, content="two", tokens=1, finish_reason="stop")

    async def scenario() -> None:
        manager = ReplyManager(store, sweep_interval_s=3600)
        user, cid, plan = _started(store, database, manager.worker)
        gate = asyncio.Event()
        reply = manager.launch(store.begin_reply(user, cid, plan), outputs(gate))
        leaving = reply.subscribe()
        assert (await anext(leaving)).kind == "start"
        assert (await anext(leaving)).content == "one "
        await leaving.aclose()  # a browser tab closes
        gate.set()
        final = await reply.wait()
        assert final is not None and (final.content, final.status) == ("one two", "complete")
        late = [event async for event in reply.subscribe()]  # still readable to the end
        assert [e.kind for e in late] == ["start", "chunk", "chunk", "finish", "done", "end"]
        assert [e.id for e in late] == [0, 4, 7, 8, 9, 10]

    asyncio.run(scenario())


def test_the_sweeper_ends_replies_whose_writer_went_silent(database: Database) -> None:
    store = ConversationStore(database)

    async def scenario() -> None:
        manager = ReplyManager(store, lease_s=0.2, sweep_interval_s=0.05)
        user, cid, plan = _started(store, database, worker="other-host.example/1/1")
        reply_id = store.begin_reply(user, cid, plan).assistant_message.id
        await manager.start()
        assert store.message(user, cid, reply_id).status == "generating"  # within its lease
        for _ in range(100):
            await asyncio.sleep(0.05)
            if store.message(user, cid, reply_id).status != "generating":
                break
        assert store.message(user, cid, reply_id).status == "incomplete"
        await manager.close()

    asyncio.run(scenario())
