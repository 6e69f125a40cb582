"""ConversationStore on both databases: ownership, paging, search, the tree, reply rows."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from r1serve.conversations import (
    ConversationDraft,
    ConversationStore,
    ReplyPlan,
    ReplyProgress,
    ReplyResult,
    auto_title,
    new_id,
)
from r1serve.errors import ConflictError, NotFoundError, RequestError
from r1serve.storage import Database
from r1serve.storage.models import Message
from r1serve.storage.repositories import UserRepository


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _user(database: Database, name: str) -> int:
    with database.write() as session:
        return UserRepository(session).add(name, "hash", "user").id


@pytest.fixture
def store(database: Database) -> ConversationStore:
    return ConversationStore(database, clock=Clock())


def _plan(
    parent: str | None = None, content: str | None = "hi", reply_to: str | None = None
) -> ReplyPlan:
    new_user = reply_to is None
    return ReplyPlan(
        assistant_message_id=new_id(),
        model="m",
        prompt_tokens=5,
        dropped_turns=0,
        worker="w",
        parent_id=parent,
        user_message_id=new_id() if new_user else None,
        user_content=content if new_user else None,
        reply_to=reply_to,
    )


def _answer(store: ConversationStore, message_id: str, text: str = "ok") -> None:
    result = ReplyResult(text, "", 1, "complete", "stop", None, None)
    assert store.finish_reply(message_id, result) is not None


def _turn(store: ConversationStore, user: int, cid: str, text: str, parent: str | None) -> str:
    started = store.begin_reply(user, cid, _plan(parent, text))
    _answer(store, started.assistant_message.id, f"re: {text}")
    return started.assistant_message.id


def test_other_users_ids_are_not_found(database: Database, store: ConversationStore) -> None:
    ada, bob = _user(database, "ada"), _user(database, "bob")
    cid = store.create(ada, ConversationDraft(title="mine")).id
    reply = _turn(store, ada, cid, "hello", None)
    with pytest.raises(NotFoundError) as missing:
        store.get(bob, "0" * 24)
    for call in (
        lambda: store.get(bob, cid),
        lambda: store.detail(bob, cid),
        lambda: store.update(bob, cid, {"title": "x"}),
        lambda: store.delete(bob, cid),
        lambda: store.message(bob, cid, reply),
        lambda: store.request_stop(bob, cid, reply),
        lambda: store.context_for_regenerate(bob, cid, reply),
        lambda: store.begin_reply(bob, cid, _plan(reply)),
    ):
        with pytest.raises(NotFoundError) as caught:
            call()
        assert caught.value.message == missing.value.message
    assert store.get(ada, cid).title == "mine"
    assert store.page(bob, limit=10) == ([], None)


def test_pages_newest_first_with_a_cursor(database: Database, store: ConversationStore) -> None:
    ada = _user(database, "ada")
    ids = [store.create(ada, ConversationDraft(title=f"c{i}")).id for i in range(5)]
    first, cursor = store.page(ada, limit=2)
    assert [c.id for c in first] == ids[:2:-1][:2] == [ids[4], ids[3]]
    assert cursor is not None
    second, cursor = store.page(ada, limit=2, before=cursor)
    third, last = store.page(ada, limit=2, before=cursor)
    assert [c.id for c in second + third] == [ids[2], ids[1], ids[0]]
    assert last is None
    store.update(ada, ids[0], {"title": "renamed"})  # an update moves it to the top
    assert store.page(ada, limit=1)[0][0].id == ids[0]


def test_search_titles_and_message_text_ignoring_case(
    database: Database, store: ConversationStore
) -> None:
    ada = _user(database, "ada")
    titled = store.create(ada, ConversationDraft(title="Отчёт о ПРОДАЖАХ")).id
    texted = store.create(ada, ConversationDraft()).id
    _turn(store, ada, texted, "Wie heißt die STRAßE? 100%_done", None)
    store.create(ada, ConversationDraft(title="other"))

    def found(text: str) -> set[str]:
        return {c.id for c in store.page(ada, limit=50, text=text)[0]}

    assert found("продажах") == {titled}
    assert found("straße") == {texted}
    assert found("re: wie") == {texted}  # the reply's text counts too
    assert found("100%_") == {texted}
    assert found("%") == {texted}  # wildcards are matched literally
    assert found("_") == {texted}
    assert found("nothing like this") == set()


def test_first_message_gives_the_title(database: Database, store: ConversationStore) -> None:
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    long_line = "word " * 30
    _turn(store, ada, cid, f"\n  {long_line}\nsecond line", None)
    title = store.get(ada, cid).title
    assert title == auto_title(long_line) and title.endswith("…") and len(title) <= 61
    named = store.create(ada, ConversationDraft(title="kept")).id
    _turn(store, ada, named, "hello", None)
    assert store.get(ada, named).title == "kept"


def test_branches_siblings_and_switching(database: Database, store: ConversationStore) -> None:
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    first = _turn(store, ada, cid, "one", None)
    second = _turn(store, ada, cid, "two", first)
    question = store.message(ada, cid, second).parent_id
    assert question is not None
    again = store.begin_reply(ada, cid, _plan(reply_to=question)).assistant_message
    assert again.siblings.ids == (second, again.id) and again.siblings.index == 1
    _answer(store, again.id)
    branch = store.detail(ada, cid).messages
    assert [m.id for m in branch][-1] == again.id
    assert branch[-1].siblings.count == 2

    # Switch to the older reply; then to the first question: down to its newest leaf.
    store.update(ada, cid, {"current_leaf_id": second})
    assert store.detail(ada, cid).messages[-1].id == second
    store.update(ada, cid, {"current_leaf_id": first})
    assert store.detail(ada, cid).conversation.current_leaf_id == again.id
    with pytest.raises(NotFoundError):
        store.update(ada, cid, {"current_leaf_id": "f" * 24})
    store.update(ada, cid, {"current_leaf_id": None})
    assert store.detail(ada, cid).messages == []


def test_one_reply_at_a_time(database: Database, store: ConversationStore) -> None:
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    other = store.create(ada, ConversationDraft()).id
    running = store.begin_reply(ada, cid, _plan()).assistant_message
    assert store.get(ada, cid).active_message_id == running.id
    with pytest.raises(ConflictError):
        store.begin_reply(ada, cid, _plan(running.id))
    with pytest.raises(ConflictError):
        store.context_for_message(ada, cid, None, default_parent=True)
    store.begin_reply(ada, other, _plan())  # another conversation is free
    _answer(store, running.id)
    assert store.get(ada, cid).active_message_id is None
    store.begin_reply(ada, cid, _plan(running.id))


def test_messages_go_under_replies(database: Database, store: ConversationStore) -> None:
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    reply = _turn(store, ada, cid, "one", None)
    question = store.message(ada, cid, reply).parent_id
    with pytest.raises(RequestError, match="under a reply"):
        store.context_for_message(ada, cid, question, default_parent=False)
    with pytest.raises(RequestError, match="regenerated"):
        store.context_for_regenerate(ada, cid, question or "")
    with pytest.raises(RequestError, match="edited"):
        store.context_for_edit(ada, cid, reply)
    context = store.context_for_message(ada, cid, None, default_parent=True)
    assert context.parent_id == reply and [m.role for m in context.history] == ["user", "assistant"]


def test_progress_is_saved_until_the_reply_ends(
    database: Database, store: ConversationStore
) -> None:
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    reply = store.begin_reply(ada, cid, _plan()).assistant_message.id
    assert store.save_progress(reply, ReplyProgress("Hel", "think", 3)) is False
    saved = store.message(ada, cid, reply)
    assert (saved.content, saved.reasoning, saved.status) == ("Hel", "think", "generating")
    store.request_stop(ada, cid, reply)
    assert store.save_progress(reply, ReplyProgress("Hello", "think", 4)) is True
    store.finish_reply(reply, ReplyResult("Hello", "think", 4, "stopped", "abort", None, 0.5))
    assert store.save_progress(reply, ReplyProgress("late", "", 5)) is None
    final = store.message(ada, cid, reply)
    assert (final.content, final.status, final.reasoning_seconds) == ("Hello", "stopped", 0.5)


def test_sweep_marks_replies_of_gone_writers(database: Database) -> None:
    clock = Clock()
    store = ConversationStore(database, clock=clock)
    ada = _user(database, "ada")
    cids = [store.create(ada, ConversationDraft()).id for _ in range(3)]
    dead = store.begin_reply(ada, cids[0], _plan()).assistant_message.id
    silent = store.begin_reply(ada, cids[1], _plan()).assistant_message.id
    alive = store.begin_reply(ada, cids[2], _plan()).assistant_message.id
    store.save_progress(dead, ReplyProgress("partial", "", 2))
    clock.now += timedelta(seconds=100)
    store.save_progress(alive, ReplyProgress("fresh", "", 2))
    store.save_progress(dead, ReplyProgress("partial answer", "", 3))
    swept = store.sweep(lease_s=60, is_gone=lambda worker: False)
    assert swept == [silent]
    swept = store.sweep(lease_s=60, is_gone=lambda worker: True)
    assert set(swept) == {dead, alive}
    kept = store.message(ada, cids[0], dead)
    assert (kept.status, kept.content) == ("incomplete", "partial answer")
    assert store.sweep(lease_s=60, is_gone=lambda worker: True) == []


def test_deleting_a_conversation_deletes_its_tree(
    database: Database, store: ConversationStore
) -> None:
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    kept = store.create(ada, ConversationDraft()).id
    parent = _turn(store, ada, cid, "one", None)
    _turn(store, ada, cid, "two", parent)
    _turn(store, ada, kept, "three", None)
    store.delete(ada, cid)
    with pytest.raises(NotFoundError):
        store.get(ada, cid)
    with database.read() as session:
        left = {row.conversation_id for row in session.query(Message).all()}
    assert left == {kept}


def test_database_refuses_unknown_status_and_role(database: Database) -> None:
    store = ConversationStore(database)
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    for fields in ({"role": "system"}, {"role": "user", "status": "done"}):
        with pytest.raises(IntegrityError), database.write() as session:
            row = Message(id=new_id(), conversation_id=cid, dropped_turns=0, **fields)
            session.add(row)
            session.flush()


def test_two_replies_started_together_one_wins(
    database: Database, store: ConversationStore
) -> None:
    ada = _user(database, "ada")
    cid = store.create(ada, ConversationDraft()).id
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def begin() -> None:
        barrier.wait()
        try:
            store.begin_reply(ada, cid, _plan())
            outcomes.append("started")
        except ConflictError:
            outcomes.append("409")

    threads = [threading.Thread(target=begin) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["409", "409", "409", "started"]
    assert len(store.detail(ada, cid).messages) == 2
