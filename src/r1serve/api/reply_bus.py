"""Reply events and Stop between r1serve replicas, over Redis (``--redis-url``).

- The replica that generates a reply appends each of its events (the same ``ReplyEvent`` its
  own followers get, ids included) to a Redis stream of that message,
  ``{prefix}reply:{message_id}``: capped at ``MAX_EVENTS`` entries, expiring ``STREAM_TTL_S``
  after its last event (``END_TTL_S`` after the end). A stream keeps its order and can be read
  from any position, so a replica that reattaches a client reads it from the start and misses
  nothing that was published after the text it took from the database (pub/sub alone would
  lose what is sent between the two).
- A Stop on any replica is published on the channel ``{prefix}stop``; every replica listens and
  the one that writes the reply stops it. The database's ``stop_requested`` flag stays as the
  fallback when a message is missed (seen at the writer's next save).

Without Redis, none of this exists and a server works alone, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

from r1serve.conversations import MessageStatus
from r1serve.conversations.reply_events import EventKind, ReplyEvent
from r1serve.errors import ConfigError

log = logging.getLogger("r1serve.api")

MAX_EVENTS = 20_000  # approximate cap per reply; a follower fills a trimmed start from the DB
STREAM_TTL_S = 3600  # refreshed by every event
END_TTL_S = 300  # after the end: long enough for a follower that saw the reply generating
READ_COUNT = 500
CONNECT_TIMEOUT_S = 5.0
STOP_STATUSES: frozenset[str] = frozenset({"stopped", "incomplete"})
_KINDS: frozenset[str] = frozenset({"start", "chunk", "finish", "done", "error", "end"})
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _unreachable(url: str, exc: BaseException) -> ConfigError:
    reason = str(exc) or type(exc).__name__
    return ConfigError(
        f"Redis at {shown_url(url)} (--redis-url) does not answer: {reason}. Start it, fix the "
        "URL, or leave --redis-url out to run a single server without replicas."
    )


def check_redis(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """ConfigError, saying so, unless Redis at ``url`` answers a PING (checked at start-up)."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
    except ValueError as exc:
        raise ConfigError(f"--redis-url {shown_url(url)!r} is not a Redis URL: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise _unreachable(url, exc) from None
    finally:
        client.close()


def encode_event(event: ReplyEvent) -> str:
    """An event as the JSON stored in a stream entry."""
    fields: dict[str, Any] = {"i": event.id, "k": event.kind}
    if event.reasoning:
        fields["r"] = event.reasoning
    if event.content:
        fields["c"] = event.content
    if event.finish_reason is not None:
        fields["f"] = event.finish_reason
    if event.data is not None:
        fields["d"] = event.data
    if event.tool_calls:
        fields["t"] = list(event.tool_calls)
    return _dumps(fields)


def decode_event(raw: str | bytes) -> ReplyEvent:
    """The event of a stream entry; ValueError for anything r1serve did not write."""
    fields = json.loads(raw)
    kind = fields.get("k") if isinstance(fields, dict) else None
    if kind not in _KINDS or not isinstance(fields.get("i"), int):
        raise ValueError(f"not a reply event: {str(raw)[:100]}")
    return ReplyEvent(
        id=fields["i"],
        kind=cast(EventKind, kind),
        reasoning=fields.get("r", ""),
        content=fields.get("c", ""),
        finish_reason=fields.get("f"),
        data=fields.get("d"),
        tool_calls=tuple(fields.get("t", ())),
    )


class ReplyBus:
    """The Redis side of replies shared by replicas: event streams and the Stop channel."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.stop_channel = f"{prefix}stop"

    @classmethod
    async def connect(cls, url: str, prefix: str) -> ReplyBus:
        """A bus over Redis at ``url``; ConfigError if it does not answer."""
        try:
            client = redis.asyncio.Redis.from_url(
                url, socket_connect_timeout=CONNECT_TIMEOUT_S, protocol=2
            )
        except ValueError as exc:
            raise ConfigError(f"--redis-url {shown_url(url)!r} is not a Redis URL: {exc}") from None
        try:
            await asyncio.wait_for(client.ping(), CONNECT_TIMEOUT_S)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            raise _unreachable(url, exc) from None
        return cls(client, prefix)

    async def close(self) -> None:
        await self.client.aclose()

    def stream_key(self, message_id: str) -> str:
        return f"{self.prefix}reply:{message_id}"

    # ---- events -------------------------------------------------------------------------

    def feed(self, message_id: str) -> ReplyFeed:
        """A publisher of one reply's events, in order."""
        return ReplyFeed(self, message_id)

    async def append(self, message_id: str, events: Sequence[ReplyEvent]) -> None:
        """Add events to a reply's stream (one round trip) and renew its expiry.

        A batch that starts the reply first drops the stream a previous generation of the same
        message left (a reply continued after its token limit), atomically.
        """
        key = self.stream_key(message_id)
        starts = bool(events) and events[0].kind == "start"
        async with self.client.pipeline(transaction=starts) as pipe:
            if starts:
                pipe.delete(key)
            for event in events:
                pipe.xadd(key, {"e": encode_event(event)}, maxlen=MAX_EVENTS, approximate=True)
            ended = any(event.kind == "end" for event in events)
            pipe.expire(key, END_TTL_S if ended else STREAM_TTL_S)
            await pipe.execute()

    async def read(
        self, message_id: str, position: str, block_ms: int | None
    ) -> tuple[str, list[ReplyEvent]]:
        """Events after stream position ``position`` ("0": from the start), waiting up to
        ``block_ms`` for one (None: not at all); the new position and the events."""
        key = self.stream_key(message_id)
        found: Any = await self.client.xread({key: position}, count=READ_COUNT, block=block_ms)
        events: list[ReplyEvent] = []
        for _, entries in found or ():  # RESP2: [[key, [(entry id, {field: value})]]]
            for entry_id, fields in entries:
                position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                raw = fields.get(b"e", fields.get("e"))
                try:
                    events.append(decode_event(raw))
                except (ValueError, TypeError) as exc:
                    log.warning("skipping a bad entry of %s: %s", key, exc)
        return position, events

    # ---- Stop ---------------------------------------------------------------------------

    async def request_stop(self, message_id: str, status: MessageStatus = "stopped") -> int:
        """Ask the replica that writes ``message_id`` to stop it; how many replicas heard."""
        payload = _dumps({"message_id": message_id, "status": status})
        return int(await self.client.publish(self.stop_channel, payload))

    def stop_listener(self, on_stop: Callable[[str, MessageStatus], None]) -> StopListener:
        return StopListener(self, on_stop)


class ReplyFeed:
    """One reply's events on their way to its stream: in order, a batch per round trip."""

    def __init__(self, bus: ReplyBus, message_id: str) -> None:
        self.bus = bus
        self.message_id = message_id
        self._pending: list[ReplyEvent] = []
        self._ready = asyncio.Event()
        self._closed = False
        self._warned = False
        self._task = asyncio.create_task(self._run(), name=f"reply-feed-{message_id}")

    def put(self, event: ReplyEvent) -> None:
        """Queue an event (never blocks the reply)."""
        self._pending.append(event)
        self._ready.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._send(batch)
            if self._closed and not self._pending:
                return

    async def _send(self, batch: list[ReplyEvent]) -> None:
        for attempt in range(3):
            try:
                await self.bus.append(self.message_id, batch)
                return
            except redis.RedisError as exc:
                if attempt == 2 and not self._warned:  # followers fill gaps from the database
                    self._warned = True
                    log.warning("publishing reply %s to Redis failed: %s", self.message_id, exc)
                await asyncio.sleep(0.1 * 2**attempt)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Wait until every event queued so far is sent, at most ``timeout_s``."""
        self._closed = True
        self._ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            log.warning("reply %s: its last events did not reach Redis", self.message_id)


class StopListener:
    """Calls ``on_stop(message_id, status)`` for each Stop published by any replica."""

    def __init__(self, bus: ReplyBus, on_stop: Callable[[str, MessageStatus], None]) -> None:
        self.bus = bus
        self.on_stop = on_stop
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe now (so no Stop published after this is missed), then listen."""
        pubsub = await self._subscribe()
        self._task = asyncio.create_task(self._run(pubsub), name="reply-stop-listener")

    async def _subscribe(self) -> redis.asyncio.client.PubSub:
        """A subscription Redis has confirmed (a Stop published from now on reaches it)."""
        pubsub = self.bus.client.pubsub()
        try:
            await pubsub.subscribe(self.bus.stop_channel)
            await asyncio.wait_for(_confirmed(pubsub), CONNECT_TIMEOUT_S)
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    async def _run(self, pubsub: redis.asyncio.client.PubSub | None) -> None:
        try:
            while True:
                if pubsub is None:
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                        pubsub = await self._subscribe()
                    continue
                try:
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._handle(message.get("data"))
                except (redis.RedisError, OSError) as exc:  # the DB flag covers the gap
                    log.warning("listening for Stop on Redis failed (%s); reconnecting", exc)
                await pubsub.aclose()
                pubsub = None
        finally:
            if pubsub is not None:
                await pubsub.aclose()

    def _handle(self, data: object) -> None:
        try:
            fields = json.loads(data)  # type: ignore[arg-type]
            message_id, status = fields["message_id"], fields["status"]
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a bad Stop message: %r", str(data)[:100])
            return
        if isinstance(message_id, str) and status in STOP_STATUSES:
            self.on_stop(message_id, cast(MessageStatus, status))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def _confirmed(pubsub: redis.asyncio.client.PubSub) -> None:
    """Until Redis confirms the subscription."""
    while True:
        message = await pubsub.get_message(timeout=CONNECT_TIMEOUT_S)
        if message is not None and message.get("type") == "subscribe":
            return
