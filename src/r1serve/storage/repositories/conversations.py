"""Conversations and their messages; every read is scoped to the owning user."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from r1serve.storage.database import CASEFOLD_FUNCTION
from r1serve.storage.models import Conversation, Message

PageCursor = tuple[datetime, str]  # (updated_at, id) of the last conversation on a page


class ConversationRepository:
    """Reads and writes ``conversations`` and ``messages`` inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # ---- conversations ------------------------------------------------------------------

    def add(self, row: Conversation) -> Conversation:
        """Store a new conversation."""
        self.session.add(row)
        self.session.flush()
        return row

    def owned(
        self, user_id: int, conversation_id: str, *, lock: bool = False
    ) -> Conversation | None:
        """The user's conversation with this id; None for a missing or someone else's id.

        ``lock`` takes a row lock on PostgreSQL so that writers of one conversation queue
        (SQLite's ``BEGIN IMMEDIATE`` already serializes writers).
        """
        query = select(Conversation).where(
            Conversation.id == conversation_id, Conversation.user_id == user_id
        )
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).first()

    def page(
        self, user_id: int, *, limit: int, before: PageCursor | None, text: str | None
    ) -> list[Conversation]:
        """The user's conversations, newest update first, after ``before``; ``text`` filters.

        ``text`` matches the title or any message's content, ignoring case.
        """
        filters: list[ColumnElement[bool]] = [Conversation.user_id == user_id]
        if before is not None:
            filters.append(tuple_(Conversation.updated_at, Conversation.id) < tuple_(*before))
        if text:
            needle = self._fold_value(text)
            in_messages = exists().where(
                Message.conversation_id == Conversation.id,
                self._fold(Message.content).contains(needle, autoescape=True),
            )
            filters.append(
                or_(self._fold(Conversation.title).contains(needle, autoescape=True), in_messages)
            )
        query = (
            select(Conversation)
            .where(*filters)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(limit)
        )
        return list(self.session.scalars(query))

    def all_owned(self, user_id: int) -> list[Conversation]:
        """Every conversation of the user, oldest first."""
        query = (
            select(Conversation)
            .where(Conversation.user_id == user_id)
            .order_by(Conversation.created_at, Conversation.id)
        )
        return list(self.session.scalars(query))

    def delete(self, row: Conversation) -> None:
        """Delete a conversation; its messages go with it."""
        self.session.execute(delete(Message).where(Message.conversation_id == row.id))
        self.session.delete(row)
        self.session.flush()

    # ---- messages -----------------------------------------------------------------------

    def add_message(self, row: Message) -> Message:
        """Store a new message."""
        self.session.add(row)
        self.session.flush()
        return row

    def add_messages(self, rows: list[Message]) -> None:
        """Store many new messages in the order given (parents before their children)."""
        self.session.add_all(rows)
        self.session.flush()

    def messages(self, conversation_id: str) -> list[Message]:
        """Every message of a conversation, in the order they were written."""
        query = (
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at, Message.id)
        )
        return list(self.session.scalars(query))

    def message(self, conversation_id: str, message_id: str) -> Message | None:
        """One message of a conversation."""
        query = select(Message).where(
            Message.id == message_id, Message.conversation_id == conversation_id
        )
        return self.session.scalars(query).first()

    def children(self, conversation_id: str, parent_id: str | None) -> list[Message]:
        """Messages under ``parent_id`` (the roots for None), oldest first."""
        parent = (
            Message.parent_id.is_(None) if parent_id is None else Message.parent_id == parent_id
        )
        query = (
            select(Message)
            .where(Message.conversation_id == conversation_id, parent)
            .order_by(Message.created_at, Message.id)
        )
        return list(self.session.scalars(query))

    def generating_in(self, conversation_ids: Collection[str]) -> dict[str, str]:
        """Conversation id -> id of its reply being generated, for those that have one."""
        if not conversation_ids:
            return {}
        query = select(Message.conversation_id, Message.id).where(
            Message.conversation_id.in_(list(conversation_ids)), Message.status == "generating"
        )
        return {
            conversation_id: message_id
            for conversation_id, message_id in self.session.execute(query)
        }

    def save_progress(self, message_id: str, values: dict[str, Any]) -> bool | None:
        """Update a reply being generated; its ``stop_requested``, or None if it is not."""
        statement = (
            update(Message)
            .where(Message.id == message_id, Message.status == "generating")
            .values(**values)
            .returning(Message.stop_requested)
        )
        row = self.session.execute(statement).first()
        return None if row is None else bool(row[0])

    def generating(self) -> list[tuple[str, str | None, datetime | None]]:
        """(id, worker, heartbeat_at) of every reply marked as being generated."""
        query = select(Message.id, Message.worker, Message.heartbeat_at).where(
            Message.status == "generating"
        )
        return [(row[0], row[1], row[2]) for row in self.session.execute(query)]

    def mark_incomplete(self, message_ids: Iterable[str], at: datetime) -> int:
        """End replies whose writer is gone; what they saved so far is kept."""
        ids = list(message_ids)
        if not ids:
            return 0
        statement = (
            update(Message)
            .where(Message.id.in_(ids), Message.status == "generating")
            .values(status="incomplete", finished_at=at, worker=None)
            .returning(Message.id)
        )
        return len(self.session.execute(statement).all())

    # ---- search helpers -----------------------------------------------------------------

    def _fold(self, column: Any) -> Any:
        if self.session.get_bind().dialect.name == "sqlite":
            return getattr(func, CASEFOLD_FUNCTION)(column)
        return func.lower(column)

    def _fold_value(self, text: str) -> str:
        return text.casefold() if self.session.get_bind().dialect.name == "sqlite" else text.lower()
