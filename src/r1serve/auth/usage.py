"""Usage recording off the hot path: a background thread stores batches of usage events.

``UsageRecorder.record`` only puts the event on a queue, so finishing a stream never waits for
the database. One writer thread drains the queue in batches (in order), retrying while the
database is busy or unreachable, so a locked SQLite file or a PostgreSQL restart loses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy.exc import DBAPIError, OperationalError

from r1serve.storage import Database, utcnow
from r1serve.storage.repositories import UsageRepository

log = logging.getLogger(__name__)

MAX_BATCH = 500
_RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One request's usage. ``status``: a finish reason, or "error", "cancelled", "rejected"."""

    user_id: int | None
    api_key_id: int | None
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    status: str
    created_at: datetime = field(default_factory=utcnow)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_FLUSH = object()
_STOP = object()


class UsageRecorder:
    """Queues usage events and stores them from one background thread."""

    def __init__(
        self,
        database: Database,
        *,
        flush_interval_s: float = 0.5,
        periodic: Sequence[tuple[float, Callable[[], object]]] = (),
    ) -> None:
        self.database = database
        self.flush_interval_s = flush_interval_s
        self._periodic = [(interval, job, [time.monotonic()]) for interval, job in periodic]
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._pending_tokens: Counter[tuple[str, int]] = Counter()
        self._queued = 0
        self._stored = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="r1serve-usage", daemon=True)
            self._thread.start()

    def record(self, event: UsageEvent) -> None:
        """Queue one event; never blocks on the database."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the usage recorder is closed")
            self._queued += 1
            for owner in _owners(event):
                self._pending_tokens[owner] += event.total_tokens
        self._queue.put(event)

    def pending_tokens(self, *, user_id: int | None = None, api_key_id: int | None = None) -> int:
        """Tokens queued but not yet stored for a user or a key (quota checks add them)."""
        with self._lock:
            if user_id is not None:
                return self._pending_tokens[("user", user_id)]
            if api_key_id is not None:
                return self._pending_tokens[("key", api_key_id)]
            return 0

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every event recorded so far is stored."""
        with self._lock:
            target = self._queued
        self._queue.put(_FLUSH)
        with self._lock:
            if not self._lock.wait_for(lambda: self._stored >= target, timeout=timeout_s):
                raise TimeoutError(f"usage not stored within {timeout_s} s")

    def close(self, timeout_s: float = 30.0) -> None:
        """Store what is queued and stop the writer."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error(
                    "usage writer did not finish within %s s; %d events unsaved",
                    timeout_s,
                    self._queued - self._stored,
                )

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                self._store(batch, stopping)
            self._run_periodic()

    def _collect(self) -> tuple[list[UsageEvent], bool]:
        """Wait for an event, then gather more for up to one flush interval."""
        try:
            first = self._queue.get(timeout=self.flush_interval_s)
        except queue.Empty:
            return [], False
        batch: list[UsageEvent] = []
        item: object = first
        deadline = time.monotonic() + self.flush_interval_s
        while True:
            if item is _STOP:
                return batch + self._drain(), True
            if item is _FLUSH:
                return batch, False
            assert isinstance(item, UsageEvent)
            batch.append(item)
            remaining = deadline - time.monotonic()
            if len(batch) >= MAX_BATCH or remaining <= 0:
                return batch, False
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                return batch, False

    def _drain(self) -> list[UsageEvent]:
        events: list[UsageEvent] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return events
            if isinstance(item, UsageEvent):
                events.append(item)

    def _store(self, batch: list[UsageEvent], stopping: bool) -> None:
        delay = 0.05
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH]
            attempts = 0
            while True:
                try:
                    with self.database.write() as session:
                        UsageRepository(session).add_many(asdict(event) for event in chunk)
                    break
                except (OperationalError, DBAPIError) as exc:
                    attempts += 1
                    if stopping and attempts >= 5:
                        log.error("could not store %d usage events: %s", len(chunk), exc)
                        break
                    log.warning("usage write failed (%s); retrying in %.2f s", exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
            self._mark_stored(chunk)

    def _mark_stored(self, chunk: list[UsageEvent]) -> None:
        with self._lock:
            for event in chunk:
                for owner in _owners(event):
                    self._pending_tokens[owner] -= event.total_tokens
                    if self._pending_tokens[owner] <= 0:
                        del self._pending_tokens[owner]
            self._stored += len(chunk)
            self._lock.notify_all()

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for interval, job, last in self._periodic:
            if now - last[0] >= interval:
                last[0] = now
                try:
                    job()
                except Exception:  # housekeeping must never stop usage recording
                    log.exception("periodic job %r failed", job)


def _owners(event: UsageEvent) -> list[tuple[str, int]]:
    owners: list[tuple[str, int]] = []
    if event.user_id is not None:
        owners.append(("user", event.user_id))
    if event.api_key_id is not None:
        owners.append(("key", event.api_key_id))
    return owners
