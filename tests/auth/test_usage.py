"""Case 25: usage from 50 concurrent writers is stored completely, in order, off the hot path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import text

from r1serve.auth import AuthService, Principal, QuotaLimits, UsageEvent, UsageRecorder
from r1serve.settings import Settings
from r1serve.storage import Database, utcnow
from r1serve.storage.repositories import UsageRepository

WRITERS = 50
EVENTS_EACH = 20


def _event(user_id: int, number: int, writer: int = 0) -> UsageEvent:
    return UsageEvent(
        user_id=user_id,
        api_key_id=None,
        model=f"writer-{writer}",
        endpoint="/v1/chat/completions",
        prompt_tokens=number,
        completion_tokens=1,
        latency_ms=5,
        status="stop",
    )


def test_fifty_concurrent_writers_lose_nothing_and_keep_order(
    auth: AuthService, admin: Principal, database: Database
) -> None:
    start = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            start.wait()
            for step in range(EVENTS_EACH):
                auth.usage.record(_event(admin.user_id, step, number))
                auth.quotas.admit(admin)  # other writes to the same database meanwhile
        except BaseException as exc:
            failures.append(exc)

    auth.quotas.set_user_quota(admin.user_id, QuotaLimits(requests_per_minute=10**6))
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    auth.usage.flush()
    assert failures == []
    with database.read() as session:
        records = UsageRepository(session).recent(limit=10 * WRITERS * EVENTS_EACH)
    assert len(records) == WRITERS * EVENTS_EACH
    for number in range(WRITERS):
        mine = [r for r in reversed(records) if r.model == f"writer-{number}"]
        assert [r.prompt_tokens for r in mine] == list(range(EVENTS_EACH))
    assert auth.usage.pending_tokens(user_id=admin.user_id) == 0


@contextmanager
def _database_locked(database: Database) -> Iterator[None]:
    """Hold the write lock (SQLite) or a table lock (PostgreSQL) from another connection."""
    with database.engine.connect() as connection:
        if database.dialect == "sqlite":
            connection.exec_driver_sql("COMMIT")  # leave the implicit BEGIN of the listener
            connection.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            connection.execute(text("LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.rollback()


def test_recording_never_waits_for_a_locked_database(
    auth: AuthService, admin: Principal, database: Database
) -> None:
    with _database_locked(database):
        started = time.perf_counter()
        for number in range(200):
            auth.usage.record(_event(admin.user_id, number))
        assert time.perf_counter() - started < 0.1
        time.sleep(0.3)  # the writer is now stuck behind the lock
        assert auth.usage.pending_tokens(user_id=admin.user_id) == sum(range(200)) + 200
    auth.usage.flush()
    with database.read() as session:
        assert UsageRepository(session).totals(utcnow() - timedelta(hours=1)).requests == 200


def test_a_busy_database_is_retried_not_dropped(db_settings: Settings) -> None:
    settings = db_settings.model_copy(update={"database_busy_timeout_s": 0.05})
    database = Database.open(settings)
    recorder = UsageRecorder(database, flush_interval_s=0.01)
    recorder.start()
    try:
        with _database_locked(database):
            recorder.record(_event_without_user(1))
            time.sleep(0.5)  # several failed attempts: busy timeout is 50 ms
        recorder.flush()
        with database.read() as session:
            assert UsageRepository(session).totals(utcnow() - timedelta(hours=1)).requests == 1
    finally:
        recorder.close()
        database.close()


def _event_without_user(number: int) -> UsageEvent:
    return UsageEvent(None, None, "m", "/generate", number, 0, 1, "stop")


def test_close_stores_what_is_queued(database: Database) -> None:
    recorder = UsageRecorder(database, flush_interval_s=5.0)
    recorder.start()
    for number in range(10):
        recorder.record(_event_without_user(number))
    recorder.close()
    with database.read() as session:
        assert UsageRepository(session).totals(utcnow() - timedelta(hours=1)).requests == 10


def test_periodic_jobs_run_on_the_writer_thread(database: Database) -> None:
    ran = threading.Event()
    recorder = UsageRecorder(database, flush_interval_s=0.01, periodic=[(0.0, ran.set)])
    recorder.start()
    try:
        assert ran.wait(2.0)
    finally:
        recorder.close()
