"""Export and import on both databases: round trips, strict validation, never overwriting."""

from __future__ import annotations

import json
from typing import Any

import pytest

from r1serve.conversations import (
    ConversationDraft,
    ConversationStore,
    ConversationTransfer,
    ReplyPlan,
    ReplyResult,
    new_id,
)
from r1serve.conversations.transfer import export_json, export_markdown
from r1serve.errors import NotFoundError, RequestError
from r1serve.storage import Database
from r1serve.storage.repositories import UserRepository


def _user(database: Database, name: str) -> int:
    with database.write() as session:
        return UserRepository(session).add(name, "hash", "user").id


def _reply(
    store: ConversationStore,
    user: int,
    cid: str,
    *,
    parent: str | None = None,
    question: str | None = None,
    reply_to: str | None = None,
    answer: str = "ok",
    status: str = "complete",
) -> str:
    plan = ReplyPlan(
        assistant_message_id=new_id(),
        model="m",
        prompt_tokens=3,
        dropped_turns=1,
        worker="w",
        parent_id=parent,
        user_message_id=None if reply_to else new_id(),
        user_content=None if reply_to else question,
        reply_to=reply_to,
    )
    started = store.begin_reply(user, cid, plan)
    finish = "stop" if status == "complete" else "abort"
    result = ReplyResult(answer, f"thinking about {question}", 4, status, finish, None, 1.5)  # type: ignore[arg-type]
    store.finish_reply(started.assistant_message.id, result)
    return started.assistant_message.id


@pytest.fixture
def setup(database: Database) -> tuple[ConversationStore, ConversationTransfer, int]:
    return ConversationStore(database), ConversationTransfer(database), _user(database, "ada")


def _tree(store: ConversationStore, user: int) -> str:
    cid = store.create(
        user,
        ConversationDraft(title="<b>T</b>", system_prompt="sys", settings={"temperature": 0.5}),
    ).id
    first = _reply(store, user, cid, question="one", answer="**1**")
    question = store.message(user, cid, first).parent_id
    _reply(store, user, cid, reply_to=question, answer="uno", status="stopped")
    _reply(store, user, cid, parent=first, question="two", answer="2")
    return cid


def _shape(export: dict[str, Any]) -> list[Any]:
    """The exported trees with ids replaced by positions, for comparing across imports."""
    shapes = []
    for conversation in export["conversations"]:
        position = {m["id"]: i for i, m in enumerate(conversation["messages"])}
        messages = [
            {**m, "id": position[m["id"]], "parent_id": position.get(m["parent_id"])}
            for m in conversation["messages"]
        ]
        rest = {k: v for k, v in conversation.items() if k not in ("id", "messages")}
        rest["current_leaf_id"] = position.get(conversation["current_leaf_id"])
        shapes.append({**rest, "messages": messages})
    return shapes


def test_round_trip_adds_copies_with_new_ids(
    setup: tuple[ConversationStore, ConversationTransfer, int],
) -> None:
    store, transfer, ada = setup
    original = _tree(store, ada)
    exported = json.loads(export_json(transfer.export(ada)))
    assert exported["format"] == "r1serve.conversations" and exported["version"] == 1
    [conversation] = exported["conversations"]
    assert len(conversation["messages"]) == 5
    data = json.dumps(exported).encode()
    first = transfer.import_json(ada, data)
    second = transfer.import_json(ada, data)  # importing twice adds twice
    assert len({original, *first, *second}) == 3
    again = json.loads(export_json(transfer.export(ada)))
    assert {c["id"] for c in again["conversations"]} == {original, *first, *second}
    for copy in again["conversations"]:
        assert _shape({"conversations": [copy]}) == _shape(exported)
        if copy["id"] != original:
            ids = {m["id"] for m in copy["messages"]}
            assert not ids & {m["id"] for m in conversation["messages"]}
    detail = store.detail(ada, first[0])
    assert [m.content for m in detail.messages] == ["one", "**1**", "two", "2"]
    assert detail.messages[1].siblings.count == 2


def test_export_of_one_conversation_is_scoped_to_its_owner(
    database: Database, setup: tuple[ConversationStore, ConversationTransfer, int]
) -> None:
    store, transfer, ada = setup
    cid = _tree(store, ada)
    bob = _user(database, "bob")
    with pytest.raises(NotFoundError):
        transfer.export(bob, cid)
    assert transfer.export(bob).conversations == []
    assert [c.id for c in transfer.export(ada, cid).conversations] == [cid]


def test_markdown_shows_the_current_branch(
    setup: tuple[ConversationStore, ConversationTransfer, int],
) -> None:
    store, transfer, ada = setup
    _tree(store, ada)
    text = export_markdown(transfer.export(ada))
    assert text.startswith("# <b>T</b>\n")
    assert "## System\n\nsys" in text
    assert text.index("one") < text.index("**1**") < text.index("two") < text.index("2\n")
    assert "uno" not in text  # another branch
    assert "<details><summary>Reasoning</summary>\n\nthinking about one" in text


def test_replies_being_written_are_imported_as_incomplete(
    setup: tuple[ConversationStore, ConversationTransfer, int],
) -> None:
    store, transfer, ada = setup
    cid = store.create(ada, ConversationDraft()).id
    plan = ReplyPlan(new_id(), "m", 1, 0, "w", user_message_id=new_id(), user_content="q")
    store.begin_reply(ada, cid, plan)
    [copy] = transfer.import_json(ada, export_json(transfer.export(ada, cid)).encode())
    assert [m.status for m in store.detail(ada, copy).messages] == ["complete", "incomplete"]
    assert store.get(ada, copy).active_message_id is None


def _valid() -> dict[str, Any]:
    return {
        "format": "r1serve.conversations",
        "version": 1,
        "exported_at": "2026-03-01T00:00:00Z",
        "conversations": [
            {
                "id": "c1",
                "title": "t",
                "created_at": "2026-03-01T00:00:00Z",
                "updated_at": "2026-03-01T00:00:00Z",
                "current_leaf_id": "m2",
                "messages": [
                    {
                        "id": "m1",
                        "role": "user",
                        "content": "q",
                        "created_at": "2026-03-01T00:00:00Z",
                    },
                    {
                        "id": "m2",
                        "parent_id": "m1",
                        "role": "assistant",
                        "content": "a",
                        "created_at": "2026-03-01T00:00:01+02:00",
                    },
                ],
            }
        ],
    }


def _broken(path: str, value: Any) -> bytes:
    data = _valid()
    target: Any = data
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    return json.dumps(data).encode()


BAD_FILES = {
    "not json": b"{nope",
    "a list": b"[]",
    "wrong format": _broken("format", "other"),
    "future version": _broken("version", 2),
    "unknown field": _broken("conversations.0.extra", 1),
    "missing parent": _broken("conversations.0.messages.1.parent_id", "m9"),
    "cycle": _broken("conversations.0.messages.0.parent_id", "m2"),
    "duplicate id": _broken("conversations.0.messages.1.id", "m1"),
    "missing leaf": _broken("conversations.0.current_leaf_id", "m7"),
    "system role": _broken("conversations.0.messages.0.role", "system"),
    "unknown status": _broken("conversations.0.messages.0.status", "done"),
    "naive time": _broken("conversations.0.created_at", "2026-03-01T00:00:00"),
    "string count": _broken("conversations.0.messages.1.prompt_tokens", "10"),
    "negative count": _broken("conversations.0.messages.1.completion_tokens", -1),
    "NUL": _broken("conversations.0.messages.0.content", "a\x00b"),
    "long title": _broken("conversations.0.title", "x" * 201),
    "bad settings": _broken("conversations.0.settings", {"temperature": -1}),
    "unknown setting": _broken("conversations.0.settings", {"temp": 1}),
    "lone surrogate": _broken("conversations.0.title", "x").replace(b'"x"', b'"\\ud800"'),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_refused_and_add_nothing(
    name: str, setup: tuple[ConversationStore, ConversationTransfer, int]
) -> None:
    store, transfer, ada = setup
    with pytest.raises(RequestError) as caught:
        transfer.import_json(ada, BAD_FILES[name])
    assert caught.value.status_code == 400
    assert caught.value.message.startswith("not a conversation export: ")
    assert store.page(ada, limit=5)[0] == []


def test_the_valid_example_imports(
    setup: tuple[ConversationStore, ConversationTransfer, int],
) -> None:
    store, transfer, ada = setup
    [cid] = transfer.import_json(ada, json.dumps(_valid()).encode())
    messages = store.detail(ada, cid).messages
    assert [m.content for m in messages] == ["q", "a"]
    assert messages[1].created_at.isoformat() == "2026-02-28T22:00:01+00:00"
