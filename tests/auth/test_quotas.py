"""Quotas per user and per key: requests per minute, tokens per UTC day, 429 + Retry-After."""

from __future__ import annotations

from collections.abc import Callable

import argon2
import pytest

from r1serve.auth import AuthService, Principal, QuotaLimits, UsageEvent
from r1serve.errors import NotFoundError, RateLimitError, RequestError
from r1serve.settings import Settings
from r1serve.storage import Database

from .conftest import FakeClock


def _usage(caller: Principal, tokens: int, clock: FakeClock) -> UsageEvent:
    return UsageEvent(
        user_id=caller.user_id,
        api_key_id=caller.api_key_id,
        model="tiny",
        endpoint="/v1/completions",
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
        latency_ms=10,
        status="stop",
        created_at=clock(),
    )


def test_no_limits_by_default(auth: AuthService, make_user: Callable[..., Principal]) -> None:
    ada = make_user("ada")
    for _ in range(100):
        auth.quotas.admit(ada)
    assert auth.quotas.limits(ada) == (QuotaLimits(), None)


def test_requests_per_minute_for_a_user(
    auth: AuthService, make_user: Callable[..., Principal], clock: FakeClock
) -> None:
    ada = make_user("ada")
    auth.quotas.set_user_quota(ada.user_id, QuotaLimits(requests_per_minute=3))
    for _ in range(3):
        auth.quotas.admit(ada)
    with pytest.raises(RateLimitError) as caught:
        auth.quotas.admit(ada)
    error = caught.value
    assert error.status_code == 429 and error.code == "requests_per_minute_exceeded"
    assert "limited to 3 requests per minute" in error.message and error.retry_after >= 1
    clock.advance(error.retry_after)
    auth.quotas.admit(ada)


def test_refused_requests_do_not_count(
    auth: AuthService, make_user: Callable[..., Principal], clock: FakeClock
) -> None:
    ada = make_user("ada")
    auth.quotas.set_user_quota(ada.user_id, QuotaLimits(requests_per_minute=1))
    auth.quotas.admit(ada)
    for _ in range(5):
        with pytest.raises(RateLimitError) as caught:
            auth.quotas.admit(ada)
    clock.advance(caught.value.retry_after)
    auth.quotas.admit(ada)


def test_key_limits_apply_on_top_of_the_users(
    auth: AuthService, make_user: Callable[..., Principal]
) -> None:
    ada = make_user("ada")
    auth.quotas.set_user_quota(ada.user_id, QuotaLimits(requests_per_minute=5))
    tight = auth.authenticate(
        session_token=None,
        api_key=auth.keys.create(ada.user_id, quota=QuotaLimits(requests_per_minute=2)).key,
    )
    loose = auth.authenticate(session_token=None, api_key=auth.keys.create(ada.user_id).key)
    auth.quotas.admit(tight)
    auth.quotas.admit(tight)
    with pytest.raises(RateLimitError, match="this API key is limited to 2"):
        auth.quotas.admit(tight)
    for _ in range(3):
        auth.quotas.admit(
            loose
        )  # the user's 5 are now used: 2 through one key, 3 through the other
    with pytest.raises(RateLimitError, match="user 'ada' is limited to 5"):
        auth.quotas.admit(loose)


def test_tokens_per_day_count_stored_and_queued_usage_and_reset_at_midnight(
    auth: AuthService, make_user: Callable[..., Principal], clock: FakeClock
) -> None:
    ada = make_user("ada")
    auth.quotas.set_user_quota(ada.user_id, QuotaLimits(tokens_per_day=1000))
    auth.usage.record(_usage(ada, 600, clock))
    auth.usage.flush()
    auth.quotas.admit(ada)
    auth.usage.record(_usage(ada, 400, clock))  # still queued: it counts all the same
    with pytest.raises(RateLimitError) as caught:
        auth.quotas.admit(ada)
    error = caught.value
    assert error.code == "tokens_per_day_exceeded"
    assert "used 1,000 of its 1,000 tokens for today (UTC)" in error.message
    # The clock is at 12:00:30 UTC: the quota resets at midnight.
    assert error.retry_after == 12 * 3600 - 30 + 1
    status = auth.quotas.status(ada)
    assert (status.user.tokens_per_day, status.user_tokens_today) == (1000, 1000)
    clock.advance(error.retry_after)
    auth.quotas.admit(ada)


def test_key_tokens_per_day(
    auth: AuthService, make_user: Callable[..., Principal], clock: FakeClock
) -> None:
    ada = make_user("ada")
    key = auth.authenticate(
        session_token=None,
        api_key=auth.keys.create(ada.user_id, quota=QuotaLimits(tokens_per_day=100)).key,
    )
    auth.usage.record(_usage(key, 100, clock))
    with pytest.raises(RateLimitError, match="this API key has used 100 of its 100"):
        auth.quotas.admit(key)
    auth.quotas.admit(ada)  # the user itself has no limit
    assert auth.quotas.status(key).key_tokens_today == 100


def test_server_defaults_apply_to_users_without_their_own(
    auth_settings: Settings, database: Database, clock: FakeClock
) -> None:
    settings = auth_settings.model_copy(update={"default_requests_per_minute": 2})
    service = AuthService(
        settings, database, password_parameters=argon2.profiles.CHEAPEST, clock=clock
    )
    service.start()
    try:
        ada_info = service.users.create("ada", "ada-password")
        bob_info = service.users.create("bob", "bob-password")
        service.quotas.set_user_quota(bob_info.id, QuotaLimits(requests_per_minute=10))
        ada = service.sessions.login("ada", "ada-password", "::1").principal
        bob = service.sessions.login("bob", "bob-password", "::1").principal
        assert service.quotas.limits(ada)[0] == QuotaLimits(2, None)
        service.quotas.admit(ada)
        service.quotas.admit(ada)
        with pytest.raises(RateLimitError):
            service.quotas.admit(ada)
        for _ in range(10):
            service.quotas.admit(bob)
        assert ada_info.quota == QuotaLimits()  # listing shows own limits, not defaults
    finally:
        service.close()


def test_bad_quota_values(auth: AuthService, admin: Principal) -> None:
    with pytest.raises(RequestError, match="requests_per_minute"):
        auth.quotas.set_user_quota(admin.user_id, QuotaLimits(requests_per_minute=0))
    with pytest.raises(NotFoundError):
        auth.quotas.set_user_quota(999, QuotaLimits(requests_per_minute=1))
    auth.quotas.set_user_quota(admin.user_id, QuotaLimits(7, 700))
    assert auth.users.get(admin.user_id).quota == QuotaLimits(7, 700)
