"""Usage records: one row per request."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select
from sqlalchemy.orm import Session

from r1serve.storage.models import UsageRecord


@dataclass(frozen=True, slots=True)
class UsageTotals:
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class UsageDay:
    """Usage of one model on one UTC day."""

    day: date
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UsageRepository:
    """Writes and summarizes ``usage_records`` inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add_many(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Insert many records in one statement, in the order given; returns how many."""
        rows = [dict(record) for record in records]
        if rows:
            self.session.execute(insert(UsageRecord), rows)
        return len(rows)

    def tokens_since(
        self, since: datetime, *, user_id: int | None = None, api_key_id: int | None = None
    ) -> int:
        """Prompt plus completion tokens of one user or one key since a moment."""
        total = func.coalesce(
            func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0
        )
        query = select(total).where(UsageRecord.created_at >= since, *_owner(user_id, api_key_id))
        return int(self.session.scalar(query) or 0)

    def totals(
        self, since: datetime, *, user_id: int | None = None, api_key_id: int | None = None
    ) -> UsageTotals:
        """Requests and tokens since a moment; everyone's when no user or key is given."""
        query = select(
            func.count(),
            func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
        ).where(UsageRecord.created_at >= since, *_owner(user_id, api_key_id))
        requests, prompt, completion = self.session.execute(query).one()
        return UsageTotals(int(requests), int(prompt), int(completion))

    def by_day(self, since: datetime, *, user_id: int | None = None) -> list[UsageDay]:
        """Usage per UTC day and model since a moment, newest day first."""
        day = func.date(UsageRecord.created_at)
        query = (
            select(
                day,
                UsageRecord.model,
                func.count(),
                func.sum(UsageRecord.prompt_tokens),
                func.sum(UsageRecord.completion_tokens),
            )
            .where(UsageRecord.created_at >= since, *_owner(user_id, None))
            .group_by(day, UsageRecord.model)
            .order_by(day.desc(), UsageRecord.model)
        )
        return [
            # SQLite's date() gives text, PostgreSQL's a date.
            UsageDay(
                day=value if isinstance(value, date) else date.fromisoformat(str(value)),
                model=model,
                requests=int(requests),
                prompt_tokens=int(prompt or 0),
                completion_tokens=int(completion or 0),
            )
            for value, model, requests, prompt, completion in self.session.execute(query)
        ]

    def recent(
        self, *, user_id: int | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[UsageRecord]:
        """The newest records, newest first; page with ``before_id``."""
        filters = _owner(user_id, None)
        if before_id is not None:
            filters.append(UsageRecord.id < before_id)
        query = select(UsageRecord).where(*filters).order_by(UsageRecord.id.desc()).limit(limit)
        return list(self.session.scalars(query))


def _owner(user_id: int | None, api_key_id: int | None) -> list[ColumnElement[bool]]:
    """Filters that narrow records to one user and/or one key."""
    filters: list[ColumnElement[bool]] = []
    if user_id is not None:
        filters.append(UsageRecord.user_id == user_id)
    if api_key_id is not None:
        filters.append(UsageRecord.api_key_id == api_key_id)
    return filters
