"""Conversation history: CRUD, replies that outlive the connection, export and import.

Every route is scoped to the caller: another user's conversation or message id is a 404 with
the same message as a missing one.

Tools are part of a conversation's ``settings`` (``tools``, ``tool_choice``,
``parallel_tool_calls``, as on ``/v1/chat/completions``), so every reply of the conversation
(post, regenerate, edit, continue, tool results) offers the same ones. A reply that calls tools
is stored with its ``tool_calls`` and ``finish_reason: "tool_calls"``; the client answers them
with ``POST …/messages/{id}/tool-results``, which stores one ``tool`` message per call and
streams the next reply. docs/history.md describes the whole loop.
"""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from r1serve.api.body import OffLoopRoute
from r1serve.api.conversation_schemas import (
    ConversationCreate,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    ConversationWithMessages,
    ImportResult,
    MessageEdit,
    MessageOut,
    MessagePost,
    ToolResultsPost,
    conversation_with_messages,
)
from r1serve.api.deps import get_settings
from r1serve.api.history import HistoryService
from r1serve.api.metering import Admitted, Metered
from r1serve.api.schemas import SSE_CONTENT, ErrorResponse
from r1serve.api.security import Caller
from r1serve.api.sse import event_stream
from r1serve.settings import Settings

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 429)
}
SSE_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {"content": SSE_CONTENT, "description": "The reply as server-sent events."}
}
router = APIRouter(
    prefix="/api/conversations", tags=["conversations"], responses=ERRORS, route_class=OffLoopRoute
)


def get_history(request: Request) -> HistoryService:
    history: HistoryService = request.app.state.history
    return history


History = Annotated[HistoryService, Depends(get_history)]
Config = Annotated[Settings, Depends(get_settings)]
ConversationId = Annotated[str, Path(min_length=1, max_length=64)]
MessageId = Annotated[str, Path(min_length=1, max_length=64)]
Format = Annotated[Literal["json", "markdown"], Query()]


@router.post("", status_code=201, response_model=ConversationOut)
def create_conversation(
    body: ConversationCreate, caller: Caller, history: History
) -> ConversationOut:
    """A new, empty conversation."""
    return ConversationOut.of(history.create(caller, body))


@router.get("", response_model=ConversationPage)
def list_conversations(
    caller: Caller,
    history: History,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[str | None, Query(max_length=500, description="Search titles and text.")] = None,
) -> ConversationPage:
    """My conversations, most recently updated first."""
    records, following = history.page(caller, limit=limit, before=before, query=q)
    return ConversationPage(data=[ConversationOut.of(r) for r in records], next_before=following)


@router.get("/export", response_class=Response)
def export_all(caller: Caller, history: History, format: Format = "json") -> Response:
    """All my conversations as a JSON (every branch) or Markdown (current branch) file."""
    return _download(*history.export(caller, None, format))


@router.post(
    "/import",
    response_model=ImportResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "A JSON export (one conversation or many).",
        }
    },
)
async def import_conversations(request: Request, caller: Caller, history: History) -> ImportResult:
    """Add the conversations of a JSON export as new ones (nothing is overwritten)."""
    data = await request.body()
    imported = await anyio.to_thread.run_sync(history.import_json, caller, data)
    return ImportResult(imported=imported)


@router.get("/{conversation_id}", response_model=ConversationWithMessages)
def get_conversation(
    conversation_id: ConversationId, caller: Caller, history: History
) -> ConversationWithMessages:
    """A conversation with the messages of its current branch, root to leaf."""
    detail = history.detail(caller, conversation_id)
    return conversation_with_messages(detail.conversation, detail.messages)


@router.patch("/{conversation_id}", response_model=ConversationOut)
def update_conversation(
    conversation_id: ConversationId, body: ConversationPatch, caller: Caller, history: History
) -> ConversationOut:
    """Rename, change the system prompt, model or settings, or switch branches."""
    return ConversationOut.of(history.update(caller, conversation_id, body))


@router.delete("/{conversation_id}", status_code=204, response_class=Response)
async def delete_conversation(
    conversation_id: ConversationId, caller: Caller, history: History
) -> Response:
    """Delete a conversation and its messages (a running reply is stopped)."""
    await history.delete(caller, conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", dependencies=[Admitted], responses=SSE_RESPONSE)
async def post_message(
    conversation_id: ConversationId,
    body: MessagePost,
    caller: Caller,
    history: History,
    settings: Config,
    meter: Metered,
) -> Response:
    """Store my message, then stream the reply; it goes on if I disconnect."""
    events = await history.post_message(caller, conversation_id, body, meter=meter)
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


@router.post(
    "/{conversation_id}/messages/{message_id}/regenerate",
    dependencies=[Admitted],
    responses=SSE_RESPONSE,
)
async def regenerate_reply(
    conversation_id: ConversationId,
    message_id: MessageId,
    caller: Caller,
    history: History,
    settings: Config,
    meter: Metered,
) -> Response:
    """A new reply beside this one (the old one stays as a branch)."""
    events = await history.regenerate(caller, conversation_id, message_id, meter=meter)
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


@router.post(
    "/{conversation_id}/messages/{message_id}/edit",
    dependencies=[Admitted],
    responses=SSE_RESPONSE,
)
async def edit_message(
    conversation_id: ConversationId,
    message_id: MessageId,
    body: MessageEdit,
    caller: Caller,
    history: History,
    settings: Config,
    meter: Metered,
) -> Response:
    """A new version of my message beside the old one, and its reply."""
    events = await history.edit(caller, conversation_id, message_id, body, meter=meter)
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


@router.post(
    "/{conversation_id}/messages/{message_id}/continue",
    dependencies=[Admitted],
    responses=SSE_RESPONSE,
)
async def continue_reply(
    conversation_id: ConversationId,
    message_id: MessageId,
    caller: Caller,
    history: History,
    settings: Config,
    meter: Metered,
) -> Response:
    """Continue a reply cut at its token limit; the new text is appended to the same message."""
    events = await history.continue_reply(caller, conversation_id, message_id, meter=meter)
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


@router.post(
    "/{conversation_id}/messages/{message_id}/tool-results",
    dependencies=[Admitted],
    responses=SSE_RESPONSE,
)
async def post_tool_results(
    conversation_id: ConversationId,
    message_id: MessageId,
    body: ToolResultsPost,
    caller: Caller,
    history: History,
    settings: Config,
    meter: Metered,
) -> Response:
    """Answer each tool call of reply ``message_id`` (stored as ``tool`` messages), then stream
    the next reply, whose prompt holds the calls and their results."""
    events = await history.tool_results(caller, conversation_id, message_id, body, meter=meter)
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


@router.get("/{conversation_id}/messages/{message_id}/stream", responses=SSE_RESPONSE)
async def reattach(
    conversation_id: ConversationId,
    message_id: MessageId,
    caller: Caller,
    history: History,
    settings: Config,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> Response:
    """A reply's events after Last-Event-ID (all without it), live while it runs."""
    events = await history.stream(caller, conversation_id, message_id, last_event_id)
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


@router.post("/{conversation_id}/messages/{message_id}/stop", response_model=MessageOut)
async def stop_reply(
    conversation_id: ConversationId, message_id: MessageId, caller: Caller, history: History
) -> MessageOut:
    """Stop a reply; it is kept as written so far, with status "stopped"."""
    return MessageOut.of(await history.stop(caller, conversation_id, message_id))


@router.get("/{conversation_id}/export", response_class=Response)
def export_conversation(
    conversation_id: ConversationId, caller: Caller, history: History, format: Format = "json"
) -> Response:
    """One conversation as a JSON (every branch) or Markdown (current branch) file."""
    return _download(*history.export(caller, conversation_id, format))


def _download(body: str, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
