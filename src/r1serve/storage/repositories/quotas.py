"""Quotas per user and per API key, and the counters that enforce requests per minute."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from r1serve.storage.models import Quota, RateCounter

_UNSET: object = object()


class QuotaRepository:
    """Reads and writes ``quotas`` rows inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def for_user(self, user_id: int) -> Quota | None:
        """The user's own quota row."""
        return self.session.scalars(select(Quota).where(Quota.user_id == user_id)).first()

    def for_key(self, api_key_id: int) -> Quota | None:
        """The key's own quota row."""
        return self.session.scalars(select(Quota).where(Quota.api_key_id == api_key_id)).first()

    def for_users(self, user_ids: list[int]) -> dict[int, Quota]:
        """Quota rows of several users, by user id."""
        rows = self.session.scalars(select(Quota).where(Quota.user_id.in_(user_ids)))
        return {row.user_id: row for row in rows if row.user_id is not None}

    def set(
        self,
        *,
        user_id: int | None = None,
        api_key_id: int | None = None,
        requests_per_minute: int | object | None = _UNSET,
        tokens_per_day: int | object | None = _UNSET,
    ) -> Quota:
        """Create or change the quota of one user or one key; omitted limits stay as they are."""
        if (user_id is None) == (api_key_id is None):
            raise ValueError("a quota belongs to exactly one user or one key")
        row = self.for_user(user_id) if user_id is not None else self.for_key(api_key_id or 0)
        if row is None:
            row = Quota(user_id=user_id, api_key_id=api_key_id)
            self.session.add(row)
        if requests_per_minute is not _UNSET:
            row.requests_per_minute = requests_per_minute  # type: ignore[assignment]
        if tokens_per_day is not _UNSET:
            row.tokens_per_day = tokens_per_day  # type: ignore[assignment]
        self.session.flush()
        return row


class RateCounterRepository:
    """Fixed-window event counters, shared by every replica through the database."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, subject: str, window_start: int, delta: int = 1) -> int:
        """Add ``delta`` to one window's counter atomically; returns the new count."""
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        values = insert(RateCounter).values(subject=subject, window_start=window_start, count=delta)
        statement = values.on_conflict_do_update(
            index_elements=[RateCounter.subject, RateCounter.window_start],
            set_={"count": RateCounter.count + delta},
        ).returning(RateCounter.count)
        return int(self.session.execute(statement).scalar_one())

    def counts(self, subject: str, window_starts: tuple[int, int]) -> tuple[int, int]:
        """The counts of two windows (previous, current) of one subject; 0 where none."""
        query = select(RateCounter.window_start, RateCounter.count).where(
            RateCounter.subject == subject, RateCounter.window_start.in_(window_starts)
        )
        found = {start: count for start, count in self.session.execute(query)}
        return found.get(window_starts[0], 0), found.get(window_starts[1], 0)

    def delete_subject(self, subject: str) -> int:
        """Forget every window of one subject."""
        result = self.session.execute(delete(RateCounter).where(RateCounter.subject == subject))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def prune(self, before: int) -> int:
        """Drop windows that started before ``before`` (epoch seconds)."""
        result = self.session.execute(delete(RateCounter).where(RateCounter.window_start < before))
        return int(result.rowcount)  # type: ignore[attr-defined]
