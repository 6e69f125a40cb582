"""Wire types of the conversation routes (never database rows).

Text is stored and returned exactly as sent, markup included: the page escapes it. Only what
no database can store exactly is refused: NUL characters and lone surrogates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from r1serve.api.tool_schemas import MAX_TOOLS, FunctionCallOut, ToolCallOut
from r1serve.conversations import ConversationRecord, ConversationSettings, MessageRecord
from r1serve.conversations.records import check_text
from r1serve.conversations.transfer import MAX_MESSAGE, MAX_SYSTEM_PROMPT, MAX_TITLE

Text = Annotated[str, AfterValidator(check_text)]
Id = Annotated[str, Field(min_length=1, max_length=64)]


class _Input(BaseModel):
    # Our own API: a misspelled field is an error; "10" is not a number.
    model_config = ConfigDict(extra="forbid", strict=True)


class ConversationCreate(_Input):
    title: Annotated[Text, Field(max_length=MAX_TITLE)] = Field(
        "", description="Empty: taken from the first message."
    )
    system_prompt: Annotated[Text, Field(max_length=MAX_SYSTEM_PROMPT)] = ""
    model: Annotated[str, Field(max_length=512)] | None = Field(
        None, description="The served model's id; default: it."
    )
    settings: ConversationSettings = ConversationSettings()


class ConversationPatch(_Input):
    title: Annotated[Text, Field(max_length=MAX_TITLE)] | None = None
    system_prompt: Annotated[Text, Field(max_length=MAX_SYSTEM_PROMPT)] | None = None
    model: Annotated[str, Field(max_length=512)] | None = None
    settings: ConversationSettings | None = None
    current_leaf_id: Id | None = Field(
        None,
        description="Show the branch through this message (down to its newest leaf); "
        "null: an empty branch, so the next message starts a new thread.",
    )


class MessagePost(_Input):
    content: Annotated[Text, Field(min_length=1, max_length=MAX_MESSAGE)]
    parent_id: Id | None = Field(
        None,
        description="The reply to continue from; default: the current leaf. null: a new root.",
    )


class MessageEdit(_Input):
    content: Annotated[Text, Field(min_length=1, max_length=MAX_MESSAGE)]


class ToolResult(_Input):
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)]
    content: Annotated[Text, Field(max_length=MAX_MESSAGE)]


class ToolResultsPost(_Input):
    results: list[ToolResult] = Field(
        min_length=1, max_length=MAX_TOOLS, description="One result for each call of the reply."
    )


class SiblingsOut(BaseModel):
    index: int
    count: int
    ids: list[str]


class MessageOut(BaseModel):
    id: str
    parent_id: str | None
    role: Literal["user", "assistant", "tool"]
    content: str
    reasoning: str
    status: Literal["complete", "generating", "stopped", "incomplete", "error"]
    finish_reason: str | None
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_seconds: float | None
    created_at: datetime
    finished_at: datetime | None
    dropped_turns: int
    siblings: SiblingsOut
    tool_calls: list[ToolCallOut] | None = Field(None, description="An assistant's calls.")
    tool_call_id: str | None = Field(None, description="A tool message: the call it answers.")

    @classmethod
    def of(cls, record: MessageRecord) -> MessageOut:
        return cls(
            id=record.id,
            parent_id=record.parent_id,
            role=record.role,
            content=record.content,
            reasoning=record.reasoning,
            status=record.status,
            finish_reason=record.finish_reason,
            error=record.error,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            reasoning_seconds=record.reasoning_seconds,
            created_at=record.created_at,
            finished_at=record.finished_at,
            dropped_turns=record.dropped_turns,
            siblings=SiblingsOut(
                index=record.siblings.index,
                count=record.siblings.count,
                ids=list(record.siblings.ids),
            ),
            tool_calls=[tool_call_out(call) for call in record.tool_calls] or None,
            tool_call_id=record.tool_call_id,
        )


def tool_call_out(call: dict[str, Any]) -> ToolCallOut:
    """A stored call in OpenAI's shape."""
    function = call.get("function") or {}
    return ToolCallOut(
        id=str(call.get("id", "")),
        function=FunctionCallOut(
            name=str(function.get("name", "")), arguments=str(function.get("arguments", ""))
        ),
    )


def message_json(record: MessageRecord) -> dict[str, Any]:
    """A message as the JSON object events carry."""
    return MessageOut.of(record).model_dump(mode="json")


class ActiveReplyOut(BaseModel):
    message_id: str
    status: Literal["generating"] = "generating"


class ConversationOut(BaseModel):
    id: str
    title: str
    system_prompt: str
    model: str | None
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    current_leaf_id: str | None
    active_reply: ActiveReplyOut | None

    @classmethod
    def of(cls, record: ConversationRecord) -> ConversationOut:
        return cls(**_conversation_fields(record))


class ConversationWithMessages(ConversationOut):
    messages: list[MessageOut]


def _conversation_fields(record: ConversationRecord) -> dict[str, Any]:
    active = record.active_message_id
    return {
        "id": record.id,
        "title": record.title,
        "system_prompt": record.system_prompt,
        "model": record.model,
        "settings": dict(record.settings),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "current_leaf_id": record.current_leaf_id,
        "active_reply": None if active is None else ActiveReplyOut(message_id=active),
    }


def conversation_with_messages(
    record: ConversationRecord, messages: list[MessageRecord]
) -> ConversationWithMessages:
    """A conversation with the messages of its current branch."""
    return ConversationWithMessages(
        **_conversation_fields(record), messages=[MessageOut.of(m) for m in messages]
    )


class ConversationPage(BaseModel):
    data: list[ConversationOut]
    next_before: str | None = Field(
        None, description="Pass as `before` for the next page; null on the last page."
    )


class ImportResult(BaseModel):
    imported: list[str] = Field(description="Ids of the new conversations, in file order.")
