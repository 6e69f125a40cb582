"""What the conversation store hands out (never database rows), and the message tree."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from r1serve.errors import NotFoundError, RequestError
from r1serve.storage.models import Conversation, Message
from r1serve.storage.repositories import PageCursor
from r1serve.text import check_unicode

MessageStatus = Literal["complete", "generating", "stopped", "incomplete", "error"]
Role = Literal["user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("user", "assistant", "tool")
TITLE_LENGTH = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_id() -> str:
    """A fresh opaque id for a conversation or a message."""
    return secrets.token_hex(12)


def not_found(what: str = "conversation") -> NotFoundError:
    """The one 404 for a missing id and for someone else's id alike."""
    return NotFoundError(f"{what} not found", code=f"{what}_not_found")


def auto_title(text: str) -> str:
    """A title from a first message: its first non-empty line, shortened to about 60 chars."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = " ".join(line.split())
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[:TITLE_LENGTH].rsplit(" ", 1)[0] or line[:TITLE_LENGTH]
    return cut.rstrip() + "…"


def check_text(value: str) -> str:
    """Refuse text a database cannot store exactly: NUL (PostgreSQL) and lone surrogates."""
    if "\x00" in value:
        raise ValueError("text contains a NUL character (\\u0000)")
    return check_unicode(value)


def storable(text: str) -> str:
    """Model output made storable: a NUL becomes U+FFFD (same length, so offsets hold)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def encode_cursor(cursor: PageCursor) -> str:
    """An opaque paging token for the conversation after which a page starts."""
    updated_at, conversation_id = cursor
    micros = (updated_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{conversation_id}"


def decode_cursor(token: str) -> PageCursor:
    """The inverse of ``encode_cursor``; 400 for anything it did not make."""
    micros, _, conversation_id = token.partition(".")
    if not (micros.isascii() and micros.isdigit() and len(micros) <= 20 and conversation_id):
        raise RequestError("before is not a paging token from this server", param="before")
    if len(conversation_id) > 32:
        raise RequestError("before is not a paging token from this server", param="before")
    return _EPOCH + timedelta(microseconds=int(micros)), conversation_id


@dataclass(frozen=True, slots=True)
class Siblings:
    """A message's alternatives under the same parent (itself included), oldest first."""

    index: int
    ids: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One node of a conversation's tree."""

    id: str
    conversation_id: str
    parent_id: str | None
    role: Role
    content: str
    reasoning: str
    status: MessageStatus
    finish_reason: str | None
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_seconds: float | None
    dropped_turns: int
    created_at: datetime
    finished_at: datetime | None
    siblings: Siblings
    # OpenAI's shape: [{id, type: "function", function: {name, arguments}}]; () for none.
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None  # a tool message: the call it answers

    def chat_entry(self) -> dict[str, Any]:
        """The message as a chat template sees it (OpenAI's field names, no reasoning)."""
        entry: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            entry["content"] = self.content or None
            entry["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            entry["tool_call_id"] = self.tool_call_id
        return entry

    @classmethod
    def of(cls, row: Message, siblings: Siblings) -> MessageRecord:
        """From a row and its siblings."""
        return cls(
            id=row.id,
            conversation_id=row.conversation_id,
            parent_id=row.parent_id,
            role=next((role for role in ROLES if role == row.role), "user"),
            content=row.content,
            reasoning=row.reasoning,
            status=row.status,  # type: ignore[arg-type]  # the CHECK constraint holds it
            finish_reason=row.finish_reason,
            error=row.error,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            reasoning_seconds=row.reasoning_seconds,
            dropped_turns=row.dropped_turns,
            created_at=row.created_at,
            finished_at=row.finished_at,
            siblings=siblings,
            tool_calls=tuple(row.tool_calls or ()),
            tool_call_id=row.tool_call_id,
        )


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation without its messages; ``active_message_id``: a reply being generated."""

    id: str
    title: str
    system_prompt: str
    model: str | None
    settings: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    current_leaf_id: str | None
    active_message_id: str | None = None

    @classmethod
    def of(cls, row: Conversation, active_message_id: str | None) -> ConversationRecord:
        """From a row."""
        return cls(
            id=row.id,
            title=row.title,
            system_prompt=row.system_prompt,
            model=row.model,
            settings=dict(row.settings or {}),
            created_at=row.created_at,
            updated_at=row.updated_at,
            current_leaf_id=row.current_leaf_id,
            active_message_id=active_message_id,
        )


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    """A conversation and the messages of one branch, root to leaf."""

    conversation: ConversationRecord
    messages: list[MessageRecord]


@dataclass
class MessageTree:
    """The messages of one conversation, indexed by id and by parent."""

    rows: dict[str, Message] = field(default_factory=dict)
    children: dict[str | None, list[Message]] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: Iterable[Message]) -> MessageTree:
        """From rows in the order they were written (children lists keep that order)."""
        tree = cls()
        for row in rows:
            tree.rows[row.id] = row
            tree.children.setdefault(row.parent_id, []).append(row)
        return tree

    def get(self, message_id: str) -> Message:
        """The message with this id; 404 if the conversation has none."""
        row = self.rows.get(message_id)
        if row is None:
            raise not_found("message")
        return row

    def path_to(self, message_id: str | None) -> list[Message]:
        """The messages from the root down to ``message_id`` (empty for None)."""
        path: list[Message] = []
        seen: set[str] = set()
        current = message_id
        while current is not None:
            if current in seen:  # a cycle cannot be written through the API; never loop
                break
            seen.add(current)
            row = self.get(current)
            path.append(row)
            current = row.parent_id
        path.reverse()
        return path

    def leaf_under(self, message_id: str) -> str:
        """Follow the newest child down from ``message_id`` to a leaf."""
        current = self.get(message_id).id
        for _ in range(len(self.rows)):
            below = self.children.get(current)
            if not below:
                break
            current = below[-1].id
        return current

    def newest_leaf(self) -> str | None:
        """The leaf under the newest root, or None for an empty tree."""
        roots = self.children.get(None)
        return self.leaf_under(roots[-1].id) if roots else None

    def siblings(self, row: Message) -> Siblings:
        """The alternatives of ``row`` under its parent."""
        ids = tuple(sibling.id for sibling in self.children.get(row.parent_id, [row]))
        return Siblings(ids.index(row.id) if row.id in ids else 0, ids)

    def record(self, row: Message) -> MessageRecord:
        """``row`` with its siblings."""
        return MessageRecord.of(row, self.siblings(row))

    def branch(self, leaf_id: str | None) -> list[MessageRecord]:
        """Records of the branch ending at ``leaf_id``: none for None, the newest if it is gone."""
        if leaf_id is not None and leaf_id not in self.rows:
            leaf_id = self.newest_leaf()
        return [self.record(row) for row in self.path_to(leaf_id)]
