"""Following a reply that another replica generates: saved text, then its live events.

The saved text (the database) comes first, as one chunk; then the writer's events from its Redis
stream, read from the start, with what the saved text already covered cut off. The stream always
runs ahead of the saved text (an event is published before it is saved), so nothing is lost or
sent twice, and ids are the writer's own (positions in the text, ``reply_events``). When the
stream has a gap (Redis trimmed its start, or a publish failed) the missing text comes from the
database; when it falls silent, the database gives any saved text the stream did not bring and
says whether the reply has ended meanwhile (its writer died and a sweep marked it, or its last
events never reached Redis). If Redis itself fails, the rest is polled from the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from redis import RedisError

from r1serve.api.reply_bus import ReplyBus
from r1serve.conversations import MessageRecord
from r1serve.conversations.reply_events import ReplyEvent, final_events, start_event
from r1serve.errors import R1ServeError

log = logging.getLogger("r1serve.api")
Reload = Callable[[], Awaitable[MessageRecord]]


def text_between(message: MessageRecord, start: int, end: int | None = None) -> ReplyEvent | None:
    """A chunk of the saved text from ``start`` to ``end`` (None: all), or None if empty."""
    reasoning, content = message.reasoning, message.content
    total = len(reasoning) + len(content)
    end = total if end is None else min(end, total)
    if end <= start:
        return None
    text = (reasoning + content)[start:end]
    cut = max(0, min(len(text), len(reasoning) - start))  # the reasoning part of the slice
    return ReplyEvent(end, "chunk", reasoning=text[:cut], content=text[cut:])


def after_offset(event: ReplyEvent, offset: int) -> ReplyEvent:
    """A chunk trimmed to the text after ``offset`` (which falls inside it)."""
    cut = offset - event.offset
    if cut <= 0:
        return event
    reasoning = event.reasoning[cut:]
    content = event.content[max(0, cut - len(event.reasoning)) :]
    return ReplyEvent(event.id, "chunk", reasoning=reasoning, content=content)


class RelayedReply:
    """One follower's view of a reply written elsewhere."""

    def __init__(
        self,
        bus: ReplyBus,
        conversation_id: str,
        user: MessageRecord,
        message: MessageRecord,
        reload: Reload,
        poll_s: float,
    ) -> None:
        self.bus = bus
        self.conversation_id = conversation_id
        self.user = user
        self.message = message
        self.reload = reload
        self.poll_s = poll_s
        self.offset = 0
        self.block_ms = max(200, int(poll_s * 4000))  # silence before asking the database

    async def events(self) -> AsyncIterator[ReplyEvent]:
        """Start, saved text, live events to the end (or the stored end if the writer died)."""
        message = self.message
        yield start_event(self.conversation_id, self.user, message, message.dropped_turns)
        saved = text_between(message, 0)
        if saved is not None:
            self.offset = saved.id
            yield saved
        position = "0"
        while True:
            try:
                position, events = await self.bus.read(message.id, position, self.block_ms)
                if not events:  # silence: the database may know more
                    caught_up, ended = await self._catch_up()
                    for event in caught_up:
                        yield event
                    if not ended:
                        continue
                    position, events = await self.bus.read(message.id, position, None)
                    if not events:  # its end never reached Redis: the database had it
                        for event in ended:
                            yield event
                        return
            except RedisError as exc:  # Redis went away: follow the saved text instead
                log.warning("following reply %s on Redis failed (%s); polling", message.id, exc)
                async for event in self._polled():
                    yield event
                return
            for event in events:
                async for out in self._apply(event):
                    yield out
                if event.kind == "end":
                    return

    async def _apply(self, event: ReplyEvent) -> AsyncIterator[ReplyEvent]:
        if event.kind == "start":
            return  # sent already, from the database
        if event.kind != "chunk":
            yield event
            return
        if event.id <= self.offset:
            return
        if event.offset > self.offset:  # a gap: the text in between is saved by now
            async for filler in self._fill(event.offset):
                yield filler
        yield after_offset(event, self.offset)
        self.offset = event.id

    async def _fill(self, until: int) -> AsyncIterator[ReplyEvent]:
        while self.offset < until:
            try:
                message = await self.reload()
            except R1ServeError:  # deleted meanwhile: the writer's own end follows
                return
            chunk = text_between(message, self.offset, until)
            if chunk is not None:
                self.offset = chunk.id
                yield chunk
            elif message.status != "generating":
                return  # the stored text is shorter (a crash lost the rest): go on with events
            else:
                await asyncio.sleep(self.poll_s)

    async def _catch_up(self) -> tuple[list[ReplyEvent], list[ReplyEvent]]:
        """(saved text past the offset, the stored end if the reply has ended: else [])."""
        try:
            message = await self.reload()
        except R1ServeError as exc:  # deleted meanwhile
            return [], final_events(self.offset, None, exc)
        text: list[ReplyEvent] = []
        chunk = text_between(message, self.offset)
        if chunk is not None:  # later events that repeat it are cut (offset) or skipped
            self.offset = chunk.id
            text.append(chunk)
        if message.status == "generating":
            return text, []
        return text, final_events(self.offset, message, None)

    async def _polled(self) -> AsyncIterator[ReplyEvent]:
        """The rest from the database alone, polled until the reply ends."""
        while True:
            caught_up, ended = await self._catch_up()
            for event in [*caught_up, *ended]:
                yield event
            if ended:
                return
            await asyncio.sleep(self.poll_s)
