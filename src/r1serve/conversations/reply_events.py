"""The events of a conversation reply stream, and replays of stored replies.

Event ids are positions in the reply's text, so a replay from memory (a running reply) and one
from the database (a finished reply, or one another server writes) agree on every id:

- ``start`` is 0;
- a text chunk's id is the number of characters of reasoning plus answer up to and including
  it (reasoning always comes before the answer, so the text is reasoning + answer);
- the finish chunk, ``done`` (or ``error``) and ``[DONE]`` follow at N+1, N+2 and N+3, where N
  is the length of the whole text. A reply that called tools carries its whole calls in the
  finish chunk (``delta.tool_calls``, OpenAI's streamed shape, ``finish_reason: "tool_calls"``):
  calls are parsed only once complete, so they are known at the end, live and in replays alike.

"Everything after ``Last-Event-ID: k``" is then the text after offset k, plus what follows;
``done`` (or ``error``) and the end come whatever k is, so every reattach ends well-formed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from sse_starlette import ServerSentEvent

from r1serve.api.conversation_schemas import message_json
from r1serve.api.sse import DONE
from r1serve.conversations import MessageRecord
from r1serve.errors import AccessRevokedError, R1ServeError, RequestError, ShuttingDownError

EventKind = Literal["start", "chunk", "finish", "done", "error", "end"]
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
MAX_EVENT_ID = 2**53  # what a browser can hold exactly
_ALWAYS_SENT = frozenset({"done", "error", "end"})


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """One event; ``reasoning``/``content`` for chunks, ``data`` for the JSON events."""

    id: int
    kind: EventKind
    reasoning: str = ""
    content: str = ""
    finish_reason: str | None = None
    data: dict[str, Any] | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()  # the finish chunk's, in OpenAI's stored shape

    @property
    def offset(self) -> int:
        """Where a chunk's text starts in the reply's text."""
        return self.id - len(self.reasoning) - len(self.content)


@dataclass(frozen=True, slots=True)
class ChunkFormat:
    """The constant part of a reply's ``chat.completion.chunk`` objects."""

    chunk_id: str
    model: str
    created: int

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _dumps(
            {
                "id": self.chunk_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [choice],
            }
        )


def chunk_format(message: MessageRecord, model: str) -> ChunkFormat:
    """The chunk header of a reply, the same live and in replays."""
    return ChunkFormat(f"chatcmpl-{message.id}", model, int(message.created_at.timestamp()))


def parse_last_event_id(value: str | None) -> int | None:
    """The ``Last-Event-ID`` header as an id; 400 for anything this server never sent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_EVENT_ID:
        raise RequestError("Last-Event-ID must be an event id from this stream")
    return int(text)


def start_event(
    conversation_id: str, user: MessageRecord, assistant: MessageRecord, dropped_turns: int
) -> ReplyEvent:
    """The first event; the reply appears as it was when it started (empty, generating)."""
    empty = replace(
        assistant,
        content="",
        reasoning="",
        status="generating",
        finish_reason=None,
        error=None,
        completion_tokens=0,
        reasoning_seconds=None,
        finished_at=None,
    )
    data = {
        "conversation_id": conversation_id,
        "user_message": message_json(user),
        "assistant_message": message_json(empty),
        "dropped_turns": dropped_turns,
    }
    return ReplyEvent(0, "start", data=data)


def final_events(
    length: int, message: MessageRecord | None, error: R1ServeError | None
) -> list[ReplyEvent]:
    """Finish chunk, done or error, and the end, after ``length`` characters of text."""
    events: list[ReplyEvent] = []
    if message is not None and message.finish_reason is not None:
        events.append(
            ReplyEvent(
                length + 1,
                "finish",
                finish_reason=message.finish_reason,
                tool_calls=message.tool_calls,
            )
        )
    if error is None and message is not None and message.status == "error":
        error = R1ServeError(message.error or "the reply failed")
    if error is not None:
        data: dict[str, Any] = dict(error.to_dict())
        if message is not None:
            data["message"] = message_json(message)
        events.append(ReplyEvent(length + 2, "error", data=data))
    else:
        events.append(ReplyEvent(length + 2, "done", data={"message": _json(message)}))
    events.append(ReplyEvent(length + 3, "end"))
    return events


def _json(message: MessageRecord | None) -> dict[str, Any] | None:
    return None if message is None else message_json(message)


def text_after(message: MessageRecord, offset: int) -> ReplyEvent | None:
    """A chunk with the stored text after ``offset``, or None when there is none."""
    reasoning, content = message.reasoning, message.content
    total = len(reasoning) + len(content)
    if total <= offset:
        return None
    if offset < len(reasoning):
        return ReplyEvent(total, "chunk", reasoning=reasoning[offset:], content=content)
    return ReplyEvent(total, "chunk", content=content[offset - len(reasoning) :])


async def stored_events(
    conversation_id: str,
    user: MessageRecord,
    message: MessageRecord,
    reload: Callable[[], Awaitable[MessageRecord]],
    poll_s: float,
) -> AsyncIterator[ReplyEvent]:
    """A stored reply's events; one still being written elsewhere is followed by polling."""
    yield start_event(conversation_id, user, message, message.dropped_turns)
    offset = 0
    while True:
        chunk = text_after(message, offset)
        if chunk is not None:
            offset = chunk.id
            yield chunk
        if message.status != "generating":
            for event in final_events(offset, message, None):
                yield event
            return
        await asyncio.sleep(poll_s)
        try:
            message = await reload()
        except R1ServeError as exc:  # deleted meanwhile
            for event in final_events(offset, None, exc):
                yield event
            return


def render(event: ReplyEvent, after: int | None, fmt: ChunkFormat) -> ServerSentEvent | None:
    """The SSE form of an event, trimmed to what follows ``after``; None if all came before.

    ``done``/``error`` and the end are always sent: a client past the saved text (it saw text
    that a crash lost) still learns how the reply ended and what was kept.
    """
    if after is not None and event.id <= after and event.kind not in _ALWAYS_SENT:
        return None
    event_id = str(event.id)
    if event.kind == "chunk":
        reasoning, content = event.reasoning, event.content
        if after is not None and after > event.offset:
            cut = after - event.offset
            reasoning, content = reasoning[cut:], content[max(0, cut - len(event.reasoning)) :]
        delta: dict[str, str] = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
            delta["reasoning"] = reasoning
        if content:
            delta["content"] = content
        return ServerSentEvent(data=fmt.chunk(delta), id=event_id)
    if event.kind == "finish":
        calls = [{"index": index, **call} for index, call in enumerate(event.tool_calls)]
        ending = {"tool_calls": calls} if calls else {}
        return ServerSentEvent(data=fmt.chunk(ending, event.finish_reason), id=event_id)
    if event.kind == "end":
        return ServerSentEvent(data=DONE, id=event_id)
    return ServerSentEvent(data=_dumps(event.data), event=event.kind, id=event_id)


async def sse(
    events: AsyncIterator[ReplyEvent], after: int | None, fmt: ChunkFormat
) -> AsyncIterator[ServerSentEvent]:
    """Rendered events after ``after``; closing this closes ``events`` (never the reply).

    A follower whose own access ends, or who follows a saved reply at the server's shutdown,
    gets an error event and the end, without ids: a later reattach resumes from the last real
    event.
    """
    try:
        async for event in events:
            rendered = render(event, after, fmt)
            if rendered is not None:
                yield rendered
    except (AccessRevokedError, ShuttingDownError) as exc:
        yield ServerSentEvent(data=_dumps(exc.to_dict()), event="error")
        yield ServerSentEvent(data=DONE)
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
