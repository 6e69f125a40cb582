"""Quotas per user and per API key: requests per minute and tokens per UTC day.

Both are checked before generation starts. Requests per minute use database counters (shared by
replicas); tokens per day add the stored usage of today to what the usage writer still holds.
A request admitted under the quota runs to its end even if it takes the total over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from r1serve.auth.principal import Principal, QuotaLimits
from r1serve.auth.ratelimit import SlidingWindow
from r1serve.auth.usage import UsageRecorder
from r1serve.errors import NotFoundError, RateLimitError, RequestError
from r1serve.storage import Database
from r1serve.storage.repositories import (
    ApiKeyRepository,
    QuotaRepository,
    RateCounterRepository,
    UsageRepository,
    UserRepository,
)

MINUTE_S = 60
MAX_LIMIT = 10**12
MAX_REQUESTS_PER_MINUTE = 2**31 - 1  # an INTEGER column (PostgreSQL: 32 bits)


def check_limits(limits: QuotaLimits) -> None:
    """Limits are positive whole numbers that their columns hold, or None for no limit."""
    for param, value, most in (
        ("requests_per_minute", limits.requests_per_minute, MAX_REQUESTS_PER_MINUTE),
        ("tokens_per_day", limits.tokens_per_day, MAX_LIMIT),
    ):
        if value is not None and not 1 <= value <= most:
            raise RequestError(
                f"{param} must be between 1 and {most} (or empty for no limit)", param=param
            )


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """Limits in force for a caller and what they used today."""

    user: QuotaLimits
    key: QuotaLimits | None
    user_tokens_today: int
    key_tokens_today: int | None
    resets_at: datetime


def start_of_day(moment: datetime) -> datetime:
    """Midnight UTC of the moment's day."""
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class QuotaService:
    """Effective limits, quota changes, and the admission check before generation."""

    def __init__(
        self,
        database: Database,
        usage: UsageRecorder,
        *,
        default: QuotaLimits,
        clock: Callable[[], datetime],
    ) -> None:
        self.database = database
        self.usage = usage
        self.default = default
        self.clock = clock

    def set_user_quota(self, user_id: int, limits: QuotaLimits) -> QuotaLimits:
        """Set the user's own limits; None falls back to the server default."""
        check_limits(limits)
        with self.database.write() as session:
            if UserRepository(session).get(user_id) is None:
                raise NotFoundError(f"no user with id {user_id}", param="user_id")
            QuotaRepository(session).set(
                user_id=user_id,
                requests_per_minute=limits.requests_per_minute,
                tokens_per_day=limits.tokens_per_day,
            )
        return limits

    def set_key_quota(self, actor: Principal, key_id: int, limits: QuotaLimits) -> QuotaLimits:
        """Set a key's limits (on top of its owner's); None: no key limit."""
        check_limits(limits)
        with self.database.write() as session:
            key = ApiKeyRepository(session).get(key_id)
            if key is None or (not actor.is_admin and key.user_id != actor.user_id):
                raise NotFoundError(f"no API key with id {key_id}", param="key_id")
            QuotaRepository(session).set(
                api_key_id=key_id,
                requests_per_minute=limits.requests_per_minute,
                tokens_per_day=limits.tokens_per_day,
            )
        return limits

    def limits(self, principal: Principal) -> tuple[QuotaLimits, QuotaLimits | None]:
        """Limits in force for the caller's user (own, else default) and key."""
        with self.database.read() as session:
            quotas = QuotaRepository(session)
            own = quotas.for_user(principal.user_id)
            user = QuotaLimits(
                own.requests_per_minute if own and own.requests_per_minute else None,
                own.tokens_per_day if own and own.tokens_per_day else None,
            )
            key_row = quotas.for_key(principal.api_key_id) if principal.api_key_id else None
        user = QuotaLimits(
            user.requests_per_minute or self.default.requests_per_minute,
            user.tokens_per_day or self.default.tokens_per_day,
        )
        key = None
        if principal.api_key_id is not None:
            key = QuotaLimits(
                key_row.requests_per_minute if key_row else None,
                key_row.tokens_per_day if key_row else None,
            )
        return user, key

    def status(self, principal: Principal) -> QuotaStatus:
        """The caller's limits and today's token use."""
        user, key = self.limits(principal)
        now = self.clock()
        return QuotaStatus(
            user=user,
            key=key,
            user_tokens_today=self._tokens_today(now, user_id=principal.user_id),
            key_tokens_today=(
                self._tokens_today(now, api_key_id=principal.api_key_id)
                if principal.api_key_id is not None
                else None
            ),
            resets_at=start_of_day(now) + timedelta(days=1),
        )

    def admit(self, principal: Principal) -> None:
        """Raise 429 with Retry-After if the caller is over a quota; else count the request."""
        user, key = self.limits(principal)
        now = self.clock()
        owners: list[tuple[str, QuotaLimits, dict[str, int]]] = [
            (f"user {principal.username!r}", user, {"user_id": principal.user_id})
        ]
        if key is not None and principal.api_key_id is not None:
            owners.append(("this API key", key, {"api_key_id": principal.api_key_id}))
        for label, limits, owner in owners:
            if limits.tokens_per_day is not None:
                used = self._tokens_today(now, **owner)
                if used >= limits.tokens_per_day:
                    wait = int((start_of_day(now) + timedelta(days=1) - now).total_seconds()) + 1
                    raise RateLimitError(
                        f"{label} has used {used:,} of its {limits.tokens_per_day:,} tokens for "
                        f"today (UTC); the quota resets in {_duration(wait)}",
                        retry_after=wait,
                        code="tokens_per_day_exceeded",
                    )
        self._count_request(now, owners)

    def _count_request(
        self, now: datetime, owners: list[tuple[str, QuotaLimits, dict[str, int]]]
    ) -> None:
        limited = [
            (label, limits.requests_per_minute, owner)
            for label, limits, owner in owners
            if limits.requests_per_minute is not None
        ]
        if not limited:
            return
        stamp = now.timestamp()
        # One transaction: if any limit refuses, no counter keeps the increment.
        with self.database.write() as session:
            counters = RateCounterRepository(session)
            for label, limit, owner in limited:
                window = SlidingWindow(limit, MINUTE_S)
                subject = "rpm-" + "-".join(f"{k}:{v}" for k, v in owner.items())
                previous_start, current_start = window.starts(stamp)
                current = counters.add(subject, current_start) - 1
                previous, _ = counters.counts(subject, (previous_start, current_start))
                if not window.allows(previous, current, stamp):
                    retry_after = window.retry_after(previous, current, stamp)
                    raise RateLimitError(
                        f"{label} is limited to {limit} requests per minute; "
                        f"retry in {retry_after} s",
                        retry_after=retry_after,
                        code="requests_per_minute_exceeded",
                    )

    def _tokens_today(
        self, now: datetime, *, user_id: int | None = None, api_key_id: int | None = None
    ) -> int:
        with self.database.read() as session:
            stored = UsageRepository(session).tokens_since(
                start_of_day(now), user_id=user_id, api_key_id=api_key_id
            )
        return stored + self.usage.pending_tokens(user_id=user_id, api_key_id=api_key_id)
