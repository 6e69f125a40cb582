"""``ConversationStore``: conversations and replies in the database, always scoped to a user.

Blocking (SQLAlchemy) calls; the HTTP layer runs them off the event loop. Every lookup names
the owning user, and a missing id and someone else's id raise the same ``NotFoundError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy.orm import Session

from r1serve.conversations.records import (
    ConversationDetail,
    ConversationRecord,
    MessageRecord,
    MessageStatus,
    MessageTree,
    Siblings,
    auto_title,
    new_id,
    not_found,
)
from r1serve.errors import ConflictError, RequestError
from r1serve.storage import Database, utcnow
from r1serve.storage.models import Conversation, Message
from r1serve.storage.repositories import ConversationRepository, PageCursor


@dataclass(frozen=True, slots=True)
class ConversationDraft:
    """A new conversation's fields."""

    title: str = ""
    system_prompt: str = ""
    model: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


class ConversationChanges(TypedDict, total=False):
    """Fields a PATCH may change; a missing key keeps the value."""

    title: str
    system_prompt: str
    model: str | None
    settings: dict[str, Any]
    current_leaf_id: str | None


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What a new reply continues: the branch above the user message it answers."""

    conversation: ConversationRecord
    history: list[MessageRecord]  # root .. parent of the user message being answered
    parent_id: str | None  # parent of that user message
    reply_to: MessageRecord | None = None  # regenerate: the existing user message


@dataclass(frozen=True, slots=True)
class ToolResultDraft:
    """A tool message to store before a reply: the result of one of the previous calls."""

    id: str
    tool_call_id: str
    content: str


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """A reply about to start: ids chosen up front, the prompt already built."""

    assistant_message_id: str
    model: str
    prompt_tokens: int
    dropped_turns: int
    worker: str
    parent_id: str | None = None  # of the new user message
    user_message_id: str | None = None  # a new user message (post, edit) ...
    user_content: str | None = None
    reply_to: str | None = None  # ... or an existing one (regenerate)
    tool_results: tuple[ToolResultDraft, ...] = ()  # ... or new tool messages, in order


@dataclass(frozen=True, slots=True)
class ReplyStart:
    """The stored messages of a reply that starts now."""

    conversation: ConversationRecord
    user_message: MessageRecord
    assistant_message: MessageRecord


@dataclass(frozen=True, slots=True)
class ReplyProgress:
    """A reply's text so far."""

    content: str
    reasoning: str
    completion_tokens: int
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """How a reply ended."""

    content: str
    reasoning: str
    completion_tokens: int
    status: MessageStatus
    finish_reason: str | None
    error: str | None
    reasoning_seconds: float | None
    tool_calls: tuple[dict[str, Any], ...] = ()  # OpenAI's shape, as MessageRecord has them


class ConversationStore:
    """Conversations, messages and replies of every user, over one database."""

    def __init__(self, database: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.clock = clock

    # ---- conversations ------------------------------------------------------------------

    def create(self, user_id: int, draft: ConversationDraft) -> ConversationRecord:
        """Store a new, empty conversation."""
        now = self.clock()
        row = Conversation(
            id=new_id(),
            user_id=user_id,
            title=draft.title,
            system_prompt=draft.system_prompt,
            model=draft.model,
            settings=dict(draft.settings),
            created_at=now,
            updated_at=now,
        )
        with self.database.write() as session:
            ConversationRepository(session).add(row)
        return ConversationRecord.of(row, None)

    def page(
        self, user_id: int, *, limit: int, before: PageCursor | None = None, text: str | None = None
    ) -> tuple[list[ConversationRecord], PageCursor | None]:
        """One page of the user's conversations, newest first, and the cursor of the next."""
        with self.database.read() as session:
            repo = ConversationRepository(session)
            rows = repo.page(user_id, limit=limit + 1, before=before, text=text)
            more = len(rows) > limit
            rows = rows[:limit]
            active = repo.generating_in([row.id for row in rows])
        following = (rows[-1].updated_at, rows[-1].id) if more else None
        return [ConversationRecord.of(row, active.get(row.id)) for row in rows], following

    def get(self, user_id: int, conversation_id: str) -> ConversationRecord:
        """One conversation without its messages."""
        with self.database.read() as session:
            repo = ConversationRepository(session)
            row = self._owned(repo, user_id, conversation_id)
            return ConversationRecord.of(row, repo.generating_in([row.id]).get(row.id))

    def detail(self, user_id: int, conversation_id: str) -> ConversationDetail:
        """A conversation and its current branch."""
        with self.database.read() as session:
            repo = ConversationRepository(session)
            row = self._owned(repo, user_id, conversation_id)
            tree = MessageTree.of(repo.messages(row.id))
            active = repo.generating_in([row.id]).get(row.id)
        return ConversationDetail(
            ConversationRecord.of(row, active), tree.branch(row.current_leaf_id)
        )

    def update(
        self, user_id: int, conversation_id: str, changes: ConversationChanges
    ) -> ConversationRecord:
        """Rename, change settings or switch branches.

        ``current_leaf_id`` may name any message: the branch follows its newest replies down
        to a leaf. None selects an empty branch (the next message starts a new root).
        """
        with self.database.write() as session:
            repo = ConversationRepository(session)
            row = self._owned(repo, user_id, conversation_id, lock=True)
            for name in ("title", "system_prompt", "model", "settings"):
                if name in changes:
                    setattr(row, name, changes[name])
            if changes.keys() - {"current_leaf_id"}:
                row.updated_at = self.clock()
            if "current_leaf_id" in changes:
                leaf = changes["current_leaf_id"]
                if leaf is not None:
                    leaf = MessageTree.of(repo.messages(row.id)).leaf_under(leaf)
                row.current_leaf_id = leaf
            session.flush()
            return ConversationRecord.of(row, repo.generating_in([row.id]).get(row.id))

    def delete(self, user_id: int, conversation_id: str) -> None:
        """Delete a conversation and all its messages."""
        with self.database.write() as session:
            repo = ConversationRepository(session)
            repo.delete(self._owned(repo, user_id, conversation_id, lock=True))

    def message(self, user_id: int, conversation_id: str, message_id: str) -> MessageRecord:
        """One message of one of the user's conversations."""
        with self.database.read() as session:
            repo = ConversationRepository(session)
            return _record(repo, self._owned_message(repo, user_id, conversation_id, message_id))

    # ---- starting replies ---------------------------------------------------------------

    def context_for_message(
        self, user_id: int, conversation_id: str, parent_id: str | None, *, default_parent: bool
    ) -> ReplyContext:
        """Where a new user message goes: under ``parent_id``, or the current leaf by default."""
        with self.database.read() as session:
            row, tree = self._for_reply(session, user_id, conversation_id)
            parent = row.current_leaf_id if default_parent else parent_id
            if parent is not None and tree.get(parent).role != "assistant":
                raise RequestError(
                    "a new message goes under a reply (an assistant message); to answer a user "
                    "message again, regenerate its reply",
                    param="parent_id",
                )
            history = [tree.record(m) for m in tree.path_to(parent)]
            return ReplyContext(ConversationRecord.of(row, None), history, parent)

    def context_for_regenerate(
        self, user_id: int, conversation_id: str, message_id: str
    ) -> ReplyContext:
        """A new answer to the user message above assistant message ``message_id``."""
        with self.database.read() as session:
            row, tree = self._for_reply(session, user_id, conversation_id)
            reply = tree.get(message_id)
            if reply.role != "assistant" or reply.parent_id is None:
                raise RequestError("only a reply (an assistant message) can be regenerated")
            question = tree.get(reply.parent_id)
            history = [tree.record(m) for m in tree.path_to(question.parent_id)]
            return ReplyContext(
                ConversationRecord.of(row, None), history, question.parent_id, tree.record(question)
            )

    def context_for_edit(self, user_id: int, conversation_id: str, message_id: str) -> ReplyContext:
        """A new version of user message ``message_id``, beside it under the same parent."""
        with self.database.read() as session:
            row, tree = self._for_reply(session, user_id, conversation_id)
            original = tree.get(message_id)
            if original.role != "user":
                raise RequestError("only a user message can be edited")
            history = [tree.record(m) for m in tree.path_to(original.parent_id)]
            return ReplyContext(ConversationRecord.of(row, None), history, original.parent_id)

    def context_for_tool_results(
        self, user_id: int, conversation_id: str, message_id: str, call_ids: list[str]
    ) -> ReplyContext:
        """Tool results go under reply ``message_id``; 400 unless they answer each of its calls."""
        with self.database.read() as session:
            row, tree = self._for_reply(session, user_id, conversation_id)
            reply = tree.get(message_id)
            calls = [str(call.get("id")) for call in reply.tool_calls or ()]
            if reply.role != "assistant" or not calls:
                raise RequestError("tool results answer a reply that called tools")
            if sorted(call_ids) != sorted(calls):
                raise RequestError(
                    f"tool results must answer each call of the reply once: {calls}",
                    param="results",
                )
            history = [tree.record(m) for m in tree.path_to(reply.id)]
            return ReplyContext(ConversationRecord.of(row, None), history, reply.id)

    def begin_reply(self, user_id: int, conversation_id: str, plan: ReplyPlan) -> ReplyStart:
        """Commit the user message (if new) and an empty reply marked as generating.

        409 when another reply of the conversation is still being generated.
        """
        now = self.clock()
        with self.database.write() as session:
            repo = ConversationRepository(session)
            row = self._owned(repo, user_id, conversation_id, lock=True)
            _refuse_second_reply(repo, row.id)
            question = self._question(repo, row, plan, now)
            answer = Message(
                id=plan.assistant_message_id,
                conversation_id=row.id,
                parent_id=question.id,
                role="assistant",
                status="generating",
                prompt_tokens=plan.prompt_tokens,
                completion_tokens=0,
                dropped_turns=plan.dropped_turns,
                created_at=now,
                worker=plan.worker,
                heartbeat_at=now,
            )
            repo.add_message(answer)
            row.current_leaf_id = answer.id
            row.updated_at = now
            row.model = plan.model
            session.flush()
            return ReplyStart(
                ConversationRecord.of(row, answer.id),
                _record(repo, question),
                _record(repo, answer),
            )

    def _question(
        self, repo: ConversationRepository, row: Conversation, plan: ReplyPlan, now: datetime
    ) -> Message:
        """The user message a reply answers: the existing one, or a new one stored now."""
        if plan.reply_to is not None:
            existing = repo.message(row.id, plan.reply_to)
            if existing is None or existing.role not in ("user", "tool"):
                raise not_found("message")
            return existing
        if plan.tool_results:
            return self._tool_messages(repo, row, plan, now)
        if plan.user_message_id is None or plan.user_content is None:
            raise ValueError("a reply plan needs reply_to or a new user message")
        if plan.parent_id is not None and repo.message(row.id, plan.parent_id) is None:
            raise not_found("message")
        question = Message(
            id=plan.user_message_id,
            conversation_id=row.id,
            parent_id=plan.parent_id,
            role="user",
            content=plan.user_content,
            status="complete",
            created_at=now,
            finished_at=now,
        )
        repo.add_message(question)
        if not row.title:
            row.title = auto_title(plan.user_content)
        return question

    def _tool_messages(
        self, repo: ConversationRepository, row: Conversation, plan: ReplyPlan, now: datetime
    ) -> Message:
        """Store tool results as a chain under the reply that called; the last one."""
        parent = plan.parent_id
        if parent is None or repo.message(row.id, parent) is None:
            raise not_found("message")
        rows = []
        for result in plan.tool_results:
            rows.append(
                Message(
                    id=result.id,
                    conversation_id=row.id,
                    parent_id=parent,
                    role="tool",
                    content=result.content,
                    tool_call_id=result.tool_call_id,
                    status="complete",
                    created_at=now,
                    finished_at=now,
                )
            )
            parent = result.id
        repo.add_messages(rows)
        return rows[-1]

    # ---- saving replies -----------------------------------------------------------------

    def save_progress(self, message_id: str, progress: ReplyProgress) -> bool | None:
        """Store a reply's text so far; whether a Stop was asked for, None if it is gone."""
        with self.database.write() as session:
            return ConversationRepository(session).save_progress(
                message_id,
                {
                    "content": progress.content,
                    "reasoning": progress.reasoning,
                    "completion_tokens": progress.completion_tokens,
                    "tool_calls": list(progress.tool_calls) or None,
                    "heartbeat_at": self.clock(),
                },
            )

    def finish_reply(self, message_id: str, result: ReplyResult) -> MessageRecord | None:
        """Store how a reply ended; None if its conversation was deleted meanwhile."""
        now = self.clock()
        with self.database.write() as session:
            repo = ConversationRepository(session)
            row = session.get(Message, message_id)
            if row is None:
                return None
            row.content = result.content
            row.reasoning = result.reasoning
            row.completion_tokens = result.completion_tokens
            row.status = result.status
            row.finish_reason = result.finish_reason
            row.error = result.error
            row.reasoning_seconds = result.reasoning_seconds
            row.tool_calls = list(result.tool_calls) or None
            row.finished_at = now
            row.worker = None
            row.heartbeat_at = None
            row.stop_requested = False
            conversation = session.get(Conversation, row.conversation_id)
            if conversation is not None:
                conversation.updated_at = now
            session.flush()
            return _record(repo, row)

    def request_stop(self, user_id: int, conversation_id: str, message_id: str) -> MessageRecord:
        """Ask whichever server writes this reply to stop it (seen at its next save)."""
        with self.database.write() as session:
            repo = ConversationRepository(session)
            row = self._owned_message(repo, user_id, conversation_id, message_id)
            if row.status == "generating":
                row.stop_requested = True
                session.flush()
            return _record(repo, row)

    def sweep(self, *, lease_s: float, is_gone: Callable[[str | None], bool]) -> list[str]:
        """Mark replies whose writer is gone, or silent for ``lease_s``, as incomplete."""
        now = self.clock()
        oldest = now - timedelta(seconds=lease_s)
        with self.database.read() as session:
            generating = ConversationRepository(session).generating()
        stale = [
            message_id
            for message_id, worker, heartbeat in generating
            if heartbeat is None or heartbeat < oldest or is_gone(worker)
        ]
        if stale:
            with self.database.write() as session:
                ConversationRepository(session).mark_incomplete(stale, now)
        return stale

    # ---- helpers ------------------------------------------------------------------------

    def _owned(
        self,
        repo: ConversationRepository,
        user_id: int,
        conversation_id: str,
        *,
        lock: bool = False,
    ) -> Conversation:
        row = repo.owned(user_id, conversation_id, lock=lock)
        if row is None:
            raise not_found()
        return row

    def _owned_message(
        self, repo: ConversationRepository, user_id: int, conversation_id: str, message_id: str
    ) -> Message:
        self._owned(repo, user_id, conversation_id)
        row = repo.message(conversation_id, message_id)
        if row is None:
            raise not_found("message")
        return row

    def _for_reply(
        self, session: Session, user_id: int, conversation_id: str
    ) -> tuple[Conversation, MessageTree]:
        repo = ConversationRepository(session)
        row = self._owned(repo, user_id, conversation_id)
        _refuse_second_reply(repo, row.id)
        return row, MessageTree.of(repo.messages(row.id))


def _refuse_second_reply(repo: ConversationRepository, conversation_id: str) -> None:
    active = repo.generating_in([conversation_id]).get(conversation_id)
    if active is not None:
        raise ConflictError(
            "a reply is already being generated in this conversation; stop it or wait for it",
            code="reply_in_progress",
        )


def _record(repo: ConversationRepository, row: Message) -> MessageRecord:
    ids = tuple(m.id for m in repo.children(row.conversation_id, row.parent_id))
    return MessageRecord.of(row, Siblings(ids.index(row.id) if row.id in ids else 0, ids))
