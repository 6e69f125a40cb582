"""Reading usage back: totals, per day and model, and the latest requests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from r1serve.auth.quotas import start_of_day
from r1serve.errors import RequestError
from r1serve.storage import Database
from r1serve.storage.repositories import UsageDay, UsageRepository, UsageTotals

MAX_DAYS = 366
MAX_RECENT = 500


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One stored request."""

    id: int
    created_at: datetime
    user_id: int | None
    api_key_id: int | None
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    status: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    since: datetime
    totals: UsageTotals
    days: list[UsageDay]
    recent: list[UsageEntry]


class UsageReports:
    """Usage of one user, or of everyone, over the last days."""

    def __init__(self, database: Database, clock: Callable[[], datetime]) -> None:
        self.database = database
        self.clock = clock

    def report(self, *, user_id: int | None, days: int = 30, recent: int = 50) -> UsageReport:
        """Totals and per-day figures since midnight UTC ``days - 1`` days ago."""
        if not 1 <= days <= MAX_DAYS:
            raise RequestError(f"days must be between 1 and {MAX_DAYS}", param="days")
        if not 0 <= recent <= MAX_RECENT:
            raise RequestError(f"recent must be between 0 and {MAX_RECENT}", param="recent")
        since = start_of_day(self.clock()) - timedelta(days=days - 1)
        with self.database.read() as session:
            usage = UsageRepository(session)
            rows = usage.recent(user_id=user_id, limit=recent) if recent else []
            return UsageReport(
                since=since,
                totals=usage.totals(since, user_id=user_id),
                days=usage.by_day(since, user_id=user_id),
                recent=[
                    UsageEntry(
                        row.id,
                        row.created_at,
                        row.user_id,
                        row.api_key_id,
                        row.model,
                        row.endpoint,
                        row.prompt_tokens,
                        row.completion_tokens,
                        row.latency_ms,
                        row.status,
                    )
                    for row in rows
                ],
            )
