"""Export conversations as JSON or Markdown, and import JSON exports.

The JSON export holds every message of each tree; Markdown shows the current branch. Imports
are checked strictly (shape, sizes, a proper tree) and always add new conversations with new
ids: nothing stored is ever overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from r1serve.conversations.records import check_text, new_id, not_found
from r1serve.conversations.settings import MAX_TOOLS, ConversationSettings
from r1serve.errors import RequestError
from r1serve.storage import Database, utcnow
from r1serve.storage.models import Conversation, Message
from r1serve.storage.repositories import ConversationRepository

EXPORT_FORMAT: Literal["r1serve.conversations"] = "r1serve.conversations"
EXPORT_VERSION: Literal[1] = 1
MAX_IMPORT_CONVERSATIONS = 1000
MAX_IMPORT_MESSAGES = 10_000
MAX_TITLE = 200
MAX_SYSTEM_PROMPT = 100_000
MAX_MESSAGE = 1_000_000

Text = Annotated[str, AfterValidator(check_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class ExportedFunctionCall(_Strict):
    name: Annotated[Text, Field(min_length=1, max_length=256)]
    arguments: Annotated[Text, Field(max_length=MAX_MESSAGE)]


class ExportedToolCall(_Strict):
    id: Annotated[Text, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: ExportedFunctionCall


class ExportedMessage(_Strict):
    id: str = Field(min_length=1, max_length=64)
    parent_id: str | None = Field(None, min_length=1, max_length=64)
    role: Literal["user", "assistant", "tool"]
    content: Annotated[Text, Field(max_length=MAX_MESSAGE)]
    reasoning: Annotated[Text, Field(max_length=MAX_MESSAGE)] = ""
    status: Literal["complete", "generating", "stopped", "incomplete", "error"] = "complete"
    finish_reason: Annotated[str, Field(max_length=16)] | None = None
    error: Annotated[Text, Field(max_length=10_000)] | None = None
    prompt_tokens: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    completion_tokens: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    reasoning_seconds: Annotated[float, Field(ge=0.0, le=1e9)] | None = None
    dropped_turns: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    created_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    tool_calls: list[ExportedToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: Annotated[Text, Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _tool_fields(self) -> ExportedMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message, and only a tool message, has a tool_call_id")
        return self


class ExportedConversation(_Strict):
    id: str = Field(min_length=1, max_length=64)
    title: Annotated[Text, Field(max_length=MAX_TITLE)] = ""
    system_prompt: Annotated[Text, Field(max_length=MAX_SYSTEM_PROMPT)] = ""
    model: Annotated[Text, Field(max_length=200)] | None = None
    settings: ConversationSettings = ConversationSettings()
    created_at: AwareDatetime
    updated_at: AwareDatetime
    current_leaf_id: str | None = None
    messages: list[ExportedMessage] = Field(default_factory=list, max_length=MAX_IMPORT_MESSAGES)


class ConversationExport(_Strict):
    """The JSON export file: one conversation or many."""

    format: Literal["r1serve.conversations"]
    version: Literal[1]
    exported_at: AwareDatetime
    conversations: list[ExportedConversation] = Field(max_length=MAX_IMPORT_CONVERSATIONS)


class ConversationTransfer:
    """Exports and imports of one user's conversations."""

    def __init__(self, database: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.clock = clock

    def export(self, user_id: int, conversation_id: str | None = None) -> ConversationExport:
        """One conversation (404 if not the user's), or all of the user's."""
        with self.database.read() as session:
            repo = ConversationRepository(session)
            if conversation_id is None:
                rows = repo.all_owned(user_id)
            else:
                row = repo.owned(user_id, conversation_id)
                if row is None:
                    raise not_found()
                rows = [row]
            exported = [_export_one(row, repo.messages(row.id)) for row in rows]
        return ConversationExport(
            format=EXPORT_FORMAT,
            version=EXPORT_VERSION,
            exported_at=self.clock(),
            conversations=exported,
        )

    def import_json(self, user_id: int, data: bytes) -> list[str]:
        """Add the conversations of a JSON export as new ones; their new ids."""
        parsed = parse_export(data)
        added: list[str] = []
        with self.database.write() as session:
            repo = ConversationRepository(session)
            for conversation in parsed.conversations:
                added.append(_import_one(repo, user_id, conversation))
        return added


def parse_export(data: bytes) -> ConversationExport:
    """A validated export; 400 that says what is wrong otherwise."""
    try:
        parsed = ConversationExport.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise _bad(f"{where}: {message}{more}" if where else f"{message}{more}") from None
    for index, conversation in enumerate(parsed.conversations):
        _check_tree(conversation, f"conversations.{index}")
    return parsed


def _check_tree(conversation: ExportedConversation, where: str) -> None:
    """Unique ids, known parents, no cycles, a leaf that exists."""
    ids: dict[str, ExportedMessage] = {}
    for message in conversation.messages:
        if message.id in ids:
            raise _bad(f"{where}: message id {message.id[:64]!r} appears twice")
        ids[message.id] = message
    for message in conversation.messages:
        if message.parent_id is not None and message.parent_id not in ids:
            raise _bad(f"{where}: message {message.id!r} names a missing parent")
    for message in conversation.messages:
        seen: set[str] = set()
        current: str | None = message.id
        while current is not None:
            if current in seen:
                raise _bad(f"{where}: the messages' parents form a cycle")
            seen.add(current)
            current = ids[current].parent_id
    if conversation.current_leaf_id is not None and conversation.current_leaf_id not in ids:
        raise _bad(f"{where}: current_leaf_id names a missing message")


def _bad(message: str) -> RequestError:
    return RequestError(f"not a conversation export: {message}", code="invalid_export")


def _in_tree_order(messages: list[ExportedMessage]) -> Iterator[ExportedMessage]:
    """Parents before children, siblings in their original order."""
    children: dict[str | None, list[ExportedMessage]] = {}
    for message in messages:
        children.setdefault(message.parent_id, []).append(message)
    stack = list(reversed(children.get(None, [])))
    while stack:
        message = stack.pop()
        yield message
        stack.extend(reversed(children.get(message.id, [])))


def _import_one(repo: ConversationRepository, user_id: int, data: ExportedConversation) -> str:
    new_ids = {message.id: new_id() for message in data.messages}
    conversation = Conversation(
        id=new_id(),
        user_id=user_id,
        title=data.title,
        system_prompt=data.system_prompt,
        model=data.model,
        settings=data.settings.stored(),
        created_at=data.created_at,
        updated_at=data.updated_at,
        current_leaf_id=new_ids.get(data.current_leaf_id or ""),
    )
    repo.add(conversation)
    rows = []
    for message in _in_tree_order(data.messages):  # parents first: one flush inserts them all
        fields: dict[str, Any] = message.model_dump(exclude={"id", "parent_id", "status"})
        rows.append(
            Message(
                **fields,
                id=new_ids[message.id],
                conversation_id=conversation.id,
                parent_id=None if message.parent_id is None else new_ids[message.parent_id],
                # Nothing is generating these any more.
                status="incomplete" if message.status == "generating" else message.status,
            )
        )
    repo.add_messages(rows)
    return conversation.id


def _export_one(row: Conversation, messages: list[Message]) -> ExportedConversation:
    # Rows were checked on the way in: construct without validating again.
    exported = [_exported_message(message) for message in messages]
    return ExportedConversation.model_construct(
        id=row.id,
        title=row.title,
        system_prompt=row.system_prompt,
        model=row.model,
        settings=ConversationSettings.model_construct(**(row.settings or {})),
        created_at=row.created_at,
        updated_at=row.updated_at,
        current_leaf_id=row.current_leaf_id,
        messages=list(_in_tree_order(exported)),
    )


def _exported_message(message: Message) -> ExportedMessage:
    fields = {name: getattr(message, name) for name in ExportedMessage.model_fields}
    calls = message.tool_calls
    fields["tool_calls"] = [_exported_call(call) for call in calls] if calls else None
    return ExportedMessage.model_construct(**fields)


def _exported_call(call: dict[str, Any]) -> ExportedToolCall:
    function = call.get("function") or {}
    return ExportedToolCall.model_construct(
        id=call.get("id", ""),
        type="function",
        function=ExportedFunctionCall.model_construct(
            name=function.get("name", ""), arguments=function.get("arguments", "")
        ),
    )


def export_json(export: ConversationExport) -> str:
    """The export as a JSON document."""
    return json.dumps(export.model_dump(mode="json"), ensure_ascii=False, indent=2)


def export_markdown(export: ConversationExport) -> str:
    """The current branch of each conversation as Markdown."""
    return "\n\n---\n\n".join(_markdown_one(c) for c in export.conversations) + "\n"


_STATUS_NOTES = {
    "stopped": "stopped by the user",
    "incomplete": "incomplete: the server stopped while writing it",
    "error": "failed",
    "generating": "still being written at export time",
}


def _branch(conversation: ExportedConversation) -> list[ExportedMessage]:
    by_id = {message.id: message for message in conversation.messages}
    branch: list[ExportedMessage] = []
    current = by_id.get(conversation.current_leaf_id or "")
    while current is not None and len(branch) <= len(by_id):
        branch.append(current)
        current = by_id.get(current.parent_id or "")
    return branch[::-1]


def _heading(message: ExportedMessage) -> str:
    if message.role == "tool":
        return f"## Tool result ({message.tool_call_id})"
    return "## User" if message.role == "user" else "## Assistant"


def _markdown_one(conversation: ExportedConversation) -> str:
    lines = [f"# {conversation.title or 'Untitled conversation'}", ""]
    created = conversation.created_at.isoformat()
    lines.append(f"*{created} · {conversation.model or 'model unknown'}*")
    if conversation.system_prompt:
        lines += ["", "## System", "", conversation.system_prompt]
    for message in _branch(conversation):
        lines += ["", _heading(message), ""]
        if message.reasoning:
            lines += ["<details><summary>Reasoning</summary>", "", message.reasoning, ""]
            lines += ["</details>", ""]
        lines.append(message.content)
        for call in message.tool_calls or ():
            lines += ["", f"*Tool call* `{call.function.name}` ({call.id}):", ""]
            lines += ["```json", call.function.arguments, "```"]
        note = _STATUS_NOTES.get(message.status)
        if note is not None:
            lines += ["", f"*({note})*"]
    return "\n".join(lines)
