"""Case 25 at the storage layer: 50 concurrent writers, nothing lost, no "database is locked"."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from r1serve.storage import Database
from r1serve.storage.models import User
from r1serve.storage.repositories import RateCounterRepository, UserRepository

WRITERS = 50
WRITES_EACH = 10


def test_fifty_writers_that_read_then_write_all_succeed(database: Database) -> None:
    # Each transaction reads before it writes: on SQLite this is the pattern that fails at once
    # with "database is locked" unless write transactions begin IMMEDIATE.
    start = threading.Barrier(WRITERS)

    def writer(number: int) -> None:
        start.wait()
        for step in range(WRITES_EACH):
            with database.write() as session:
                users = UserRepository(session)
                users.count()
                users.add(f"w{number}-{step}", "hash", "user")
                RateCounterRepository(session).add("shared", 0)

    with ThreadPoolExecutor(WRITERS) as pool:
        for future in [pool.submit(writer, n) for n in range(WRITERS)]:
            future.result()  # re-raises any writer's error
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(User)) == WRITERS * WRITES_EACH
        assert RateCounterRepository(session).counts("shared", (0, 0)) == (
            WRITERS * WRITES_EACH,
            WRITERS * WRITES_EACH,
        )
