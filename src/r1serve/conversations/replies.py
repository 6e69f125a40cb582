"""Conversation replies that outlive their HTTP connection.

Each reply runs as its own asyncio task: it consumes the engine's outputs, keeps its events in
memory for any number of subscribers (who may come and go), and saves the reply in batches
(every ``flush_interval_s`` or ``flush_tokens`` tokens, plus a heartbeat while it waits). Only
Stop, the deadline, max_tokens, an engine error or the server's shutdown end it; a subscriber
going away never does. After the final save the reply leaves memory and its replays come from
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from r1serve.api.reply_bus import ReplyBus, ReplyFeed, StopListener
from r1serve.api.tools import ToolCallDelta, whole_calls
from r1serve.conversations import (
    ConversationStore,
    MessageRecord,
    MessageStatus,
    ReplyProgress,
    ReplyResult,
    ReplyStart,
    current_worker,
    worker_is_gone,
)
from r1serve.conversations.records import storable
from r1serve.conversations.reply_events import ReplyEvent, final_events, start_event
from r1serve.errors import AccessRevokedError, R1ServeError, ShuttingDownError
from r1serve.generation import REPETITION, Output

log = logging.getLogger("r1serve.api")

ENGINE_FAILED = "the model failed while generating; see the server log"
FINAL_SAVE_ATTEMPTS = 5
EARLY_STOP_S = 60.0  # how long a Stop for a reply not registered yet is kept
MAX_EARLY_STOPS = 1000


def status_of(finish_reason: str | None) -> tuple[MessageStatus, str | None]:
    """A reply's status (and error) from how the engine ended it."""
    if finish_reason in ("stop", "length", "tool_calls", REPETITION):
        return "complete", None
    if finish_reason == "error":
        return "error", ENGINE_FAILED
    return "incomplete", None  # timeout, an abort we did not ask for, or no finish at all


class Reply:
    """One reply being generated, its events, and its batched saving."""

    def __init__(
        self,
        started: ReplyStart,
        outputs: AsyncIterator[Output],
        store: ConversationStore,
        *,
        flush_interval_s: float,
        flush_tokens: int,
        heartbeat_s: float,
        resumed: MessageRecord | None = None,
        on_event: Callable[[ReplyEvent], None] | None = None,
    ) -> None:
        self.message_id = started.assistant_message.id
        self.conversation_id = started.conversation.id
        self.final: MessageRecord | None = None
        self.events: list[ReplyEvent] = [
            start_event(
                self.conversation_id,
                started.user_message,
                started.assistant_message,
                started.assistant_message.dropped_turns,
            )
        ]
        self._on_event = on_event  # other replicas' followers (Redis), when there are replicas
        if on_event is not None:
            on_event(self.events[0])
        self._outputs = outputs
        self._store = store
        self._flush_interval_s = flush_interval_s
        self._flush_tokens = flush_tokens
        self._heartbeat_s = heartbeat_s
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self._call_pieces: list[ToolCallDelta] = []
        self._length = 0
        self._tokens = 0
        self._unsaved_tokens = 0
        self._dirty = False
        self._started = time.monotonic()
        if resumed is not None:  # Continue: the text so far stays, new text is appended
            self._reasoning = [resumed.reasoning] if resumed.reasoning else []
            self._content = [resumed.content] if resumed.content else []
            self._length = len(resumed.reasoning) + len(resumed.content)
            self._tokens = resumed.completion_tokens or 0
        self._reasoning_s: float | None = None
        self._closed = False
        self._consuming = False
        self._finished = False
        self._stop_status: MessageStatus = "incomplete"
        self._early_stop: MessageStatus | None = None  # asked before the task ran
        self._ended_by: R1ServeError | None = None  # the error the final events carry
        self._wakeup = asyncio.Event()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, on_done: Callable[[Reply], None]) -> None:
        """Run the reply as a background task."""
        self._task = asyncio.create_task(self._run(on_done), name=f"reply-{self.message_id}")

    # ---- subscribers --------------------------------------------------------------------

    async def subscribe(self) -> AsyncIterator[ReplyEvent]:
        """Every event from the start, then live ones until the end; leaving changes nothing."""
        index = 0
        while True:
            while index < len(self.events):
                index += 1
                yield self.events[index - 1]
            if self._closed:
                return
            await self._wakeup.wait()

    def _publish(self, event: ReplyEvent) -> None:
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    # ---- stopping -----------------------------------------------------------------------

    def request_stop(self, status: MessageStatus = "stopped") -> None:
        """End the reply soon: its engine request is aborted and it is saved as ``status``."""
        if self._consuming and self._task is not None and not self._task.done():
            self._consuming = False
            self._stop_status = status
            self._task.cancel()
        elif not self._consuming and not self._finished and self._early_stop is None:
            self._early_stop = status  # the task has not started consuming yet

    async def stop(self, status: MessageStatus = "stopped") -> MessageRecord | None:
        """End the reply and wait for its final save; the saved message."""
        self.request_stop(status)
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.final

    async def wait(self) -> MessageRecord | None:
        """Wait until the reply has ended and been saved."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.final

    # ---- the task -----------------------------------------------------------------------

    async def _run(self, on_done: Callable[[Reply], None]) -> None:
        saver = asyncio.create_task(self._save_loop())
        self._consuming = True
        if self._early_stop is not None:  # cancels this task at its first wait in _consume
            self.request_stop(self._early_stop)
        status, finish, message = await self._consume()
        self._consuming = False
        close = getattr(self._outputs, "aclose", None)
        if close is not None:  # after a failure of our own the engine request must end too
            with contextlib.suppress(Exception):
                await close()
        self._finished = True
        self._kick.set()
        await self._end(saver, status, finish, message, on_done)

    async def _consume(self) -> tuple[MessageStatus, str | None, str | None]:
        """Apply the engine's outputs until the reply ends: (status, finish reason, error)."""
        finish: str | None = None
        try:
            async for output in self._outputs:
                self._apply(output)
                if output.stop_reason == REPETITION:
                    finish = REPETITION  # stored so the page can say why the reply ended
                else:
                    finish = output.finish_reason or finish
        except asyncio.CancelledError:
            # Stop or shutdown; leaving the stream has aborted the engine request.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if finish is None:
                return self._stop_status, "abort", None
        except ShuttingDownError:  # as ReplyManager.close would have stopped it
            return "incomplete", finish or "abort", None
        except AccessRevokedError as exc:  # the key or user that started it lost access
            self._ended_by = exc
            return "stopped", finish or "abort", exc.message
        except R1ServeError as exc:
            return "error", finish, exc.message
        except Exception:
            log.exception("reply %s failed", self.message_id)
            return "error", finish, ENGINE_FAILED
        status, message = status_of(finish)  # also when Stop came after the last output
        return status, finish, message

    async def _end(
        self,
        saver: asyncio.Task[None],
        status: MessageStatus,
        finish: str | None,
        message: str | None,
        on_done: Callable[[Reply], None],
    ) -> None:
        """Final save, then the last events; subscribers always see an end."""
        try:
            await saver  # no progress save may land after the final one
            self.final = await self._save_final(status, finish, message)
            error = self._ended_by or (None if message is None else R1ServeError(message))
            if self.final is None and error is None:
                error = R1ServeError("the reply could not be saved (was the conversation deleted?)")
            events = final_events(self._length, self.final, error)
        except Exception:
            log.exception("ending reply %s failed", self.message_id)
            events = final_events(self._length, None, R1ServeError(ENGINE_FAILED))
        finally:
            on_done(self)
        for event in events:
            self._publish(event)
        self._closed = True

    def _apply(self, output: Output) -> None:
        reasoning, content = storable(output.reasoning), storable(output.content)
        self._tokens += output.tokens
        self._unsaved_tokens += output.tokens
        if not self._dirty:  # the saver waits for a heartbeat: let it wait for the interval
            self._dirty = True
            self._kick.set()
        if reasoning:
            self._reasoning.append(reasoning)
        if content and self._reasoning and self._reasoning_s is None:
            self._reasoning_s = time.monotonic() - self._started
        if content:
            self._content.append(content)
        self._call_pieces.extend(output.tool_calls)
        if reasoning or content:
            self._length += len(reasoning) + len(content)
            self._publish(ReplyEvent(self._length, "chunk", reasoning=reasoning, content=content))
        if self._unsaved_tokens >= self._flush_tokens:
            self._kick.set()

    def _progress(self) -> ReplyProgress:
        self._unsaved_tokens = 0
        self._dirty = False
        return ReplyProgress(
            "".join(self._content), "".join(self._reasoning), self._tokens, self._tool_calls()
        )

    def _tool_calls(self) -> tuple[dict[str, Any], ...]:
        """The calls parsed so far, in OpenAI's shape (each is whole once it is released)."""
        calls = whole_calls(self._call_pieces)
        return tuple(
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": storable(call.function.name),
                    "arguments": storable(call.function.arguments),
                },
            }
            for call in calls
        )

    async def _save_loop(self) -> None:
        """Save while generating: a batch of tokens, a flush interval, or a heartbeat."""
        last = time.monotonic()
        while not self._finished:
            since = time.monotonic() - last
            wait = (self._flush_interval_s if self._dirty else self._heartbeat_s) - since
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=max(0.0, wait))
            self._kick.clear()
            if self._finished:
                return
            since = time.monotonic() - last
            batch_due = self._unsaved_tokens >= self._flush_tokens
            interval_due = self._dirty and since >= self._flush_interval_s
            if not (batch_due or interval_due or since >= self._heartbeat_s):
                continue
            stop_requested = await self._save_progress(self._progress())
            last = time.monotonic()
            if stop_requested is None:  # deleted, or declared gone by another server
                self.request_stop("incomplete")
            elif stop_requested:  # a Stop that reached another replica
                self.request_stop("stopped")

    async def _save_progress(self, progress: ReplyProgress) -> bool | None:
        try:
            return await anyio.to_thread.run_sync(
                self._store.save_progress, self.message_id, progress
            )
        except Exception as exc:  # the next save writes everything again
            log.warning("saving reply %s failed: %s", self.message_id, exc)
            return False

    async def _save_final(
        self, status: MessageStatus, finish: str | None, error: str | None
    ) -> MessageRecord | None:
        reasoning_s = self._reasoning_s
        if reasoning_s is None and self._reasoning:
            reasoning_s = time.monotonic() - self._started
        result = ReplyResult(
            content="".join(self._content),
            reasoning="".join(self._reasoning),
            completion_tokens=self._tokens,
            status=status,
            finish_reason=finish,
            error=error,
            reasoning_seconds=None if reasoning_s is None else round(reasoning_s, 3),
            tool_calls=self._tool_calls(),
        )
        for attempt in range(FINAL_SAVE_ATTEMPTS):
            try:
                return await anyio.to_thread.run_sync(
                    self._store.finish_reply, self.message_id, result
                )
            except Exception as exc:
                log.warning("final save of reply %s failed: %s", self.message_id, exc)
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        log.error("reply %s could not be saved; it will be marked incomplete", self.message_id)
        return None


class ReplyManager:
    """The replies this server is generating, and the sweep for replies whose writer died.

    With a ``bus`` (replicas sharing Redis) each reply's events are also published for the
    other replicas' followers, and a Stop published by any replica stops the reply here.
    """

    def __init__(
        self,
        store: ConversationStore,
        *,
        flush_interval_s: float = 0.5,
        flush_tokens: int = 32,
        heartbeat_s: float = 10.0,
        lease_s: float = 60.0,
        sweep_interval_s: float = 15.0,
        bus: ReplyBus | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.worker = current_worker()
        self.lease_s = lease_s
        self.sweep_interval_s = sweep_interval_s
        self._options: dict[str, Any] = {
            "flush_interval_s": flush_interval_s,
            "flush_tokens": flush_tokens,
            "heartbeat_s": heartbeat_s,
        }
        self._replies: dict[str, Reply] = {}
        self._feeds: set[asyncio.Task[None]] = set()
        self._early_stops: dict[str, tuple[MessageStatus, float]] = {}
        self._stops: StopListener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Mark replies left by a dead server as incomplete, then keep sweeping."""
        if self.bus is not None:
            self._stops = self.bus.stop_listener(self._stop_published)
            await self._stops.start()
        await self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="reply-sweeper")

    async def sweep(self) -> list[str]:
        """One sweep; the ids marked incomplete."""
        stale = await anyio.to_thread.run_sync(
            lambda: self.store.sweep(lease_s=self.lease_s, is_gone=worker_is_gone)
        )
        if stale:
            log.info("marked %d replies left by a stopped server as incomplete", len(stale))
        return stale

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("sweeping replies failed: %s", exc)

    def launch(
        self,
        started: ReplyStart,
        outputs: AsyncIterator[Output],
        resumed: MessageRecord | None = None,
    ) -> Reply:
        """Start generating a stored reply in the background (``resumed``: continue it)."""
        message_id = started.assistant_message.id
        feed = None if self.bus is None else self.bus.feed(message_id)
        on_event = None if feed is None else feed.put
        reply = Reply(
            started, outputs, self.store, resumed=resumed, on_event=on_event, **self._options
        )
        self._replies[reply.message_id] = reply
        reply.start(self._forget)
        if feed is not None:
            task = asyncio.create_task(self._drain(reply, feed), name=f"reply-drain-{message_id}")
            self._feeds.add(task)
            task.add_done_callback(self._feeds.discard)
        early = self._early_stops.pop(message_id, None)
        if self._closing:
            reply.request_stop("incomplete")
        elif early is not None:
            reply.request_stop(early[0])
        return reply

    async def _drain(self, reply: Reply, feed: ReplyFeed) -> None:
        """After the reply's last event, wait until its events have reached Redis."""
        with contextlib.suppress(Exception):
            await reply.wait()
        await feed.close()

    def _stop_published(self, message_id: str, status: MessageStatus) -> None:
        """A Stop from any replica: stop the reply if it runs here.

        One that is not registered yet (its writer is still starting the engine request) is
        remembered for a minute, so a Stop right after the start is not lost either.
        """
        reply = self._replies.get(message_id)
        if reply is not None:
            reply.request_stop(status)
            return
        now = time.monotonic()
        for old, (_, at) in list(self._early_stops.items()):
            if now - at > EARLY_STOP_S:
                del self._early_stops[old]
        if len(self._early_stops) < MAX_EARLY_STOPS:
            self._early_stops[message_id] = (status, now)

    def get(self, message_id: str) -> Reply | None:
        """The running reply with this message id."""
        return self._replies.get(message_id)

    def in_conversation(self, conversation_id: str) -> Reply | None:
        """The running reply of a conversation, if this server writes one."""
        return next(
            (r for r in self._replies.values() if r.conversation_id == conversation_id), None
        )

    @property
    def running(self) -> int:
        return len(self._replies)

    def _forget(self, reply: Reply) -> None:
        self._replies.pop(reply.message_id, None)

    async def close(self) -> None:
        """Stop every running reply, saved as incomplete, and the sweeper."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._stops is not None:
            await self._stops.close()
        replies = list(self._replies.values())
        for reply in replies:
            reply.request_stop("incomplete")
        await asyncio.gather(*(reply.wait() for reply in replies), return_exceptions=True)
        await asyncio.gather(*list(self._feeds), return_exceptions=True)  # last events out
