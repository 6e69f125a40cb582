"""Repositories on both databases: users, sessions, keys, quotas, counters, usage."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from r1serve.storage import Database
from r1serve.storage.repositories import (
    ApiKeyRepository,
    QuotaRepository,
    RateCounterRepository,
    SessionRepository,
    UsageRepository,
    UserRepository,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _user(database: Database, name: str = "ada", role: str = "user") -> int:
    with database.write() as session:
        return UserRepository(session).add(name, "hash", role).id


def test_user_names_are_unique(database: Database) -> None:
    _user(database)
    with pytest.raises(IntegrityError), database.write() as session:
        UserRepository(session).add("ada", "other", "user")


def test_role_outside_admin_and_user_is_refused_by_the_database(database: Database) -> None:
    with pytest.raises(IntegrityError), database.write() as session:
        UserRepository(session).add("eve", "hash", "root")


def test_timestamps_come_back_aware_utc(database: Database) -> None:
    user_id = _user(database)
    with database.read() as session:
        user = UserRepository(session).get(user_id)
        assert user is not None
        assert user.created_at.tzinfo is UTC
        assert abs(user.created_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_enabled_admins_are_counted(database: Database) -> None:
    _user(database, "root1", "admin")
    second = _user(database, "root2", "admin")
    with database.write() as session:
        users = UserRepository(session)
        assert users.count_enabled_admins() == 2
        user = users.get(second)
        assert user is not None
        users.set_disabled(user, True)
        assert users.count_enabled_admins() == 1
        assert users.count() == 2


def test_sessions_expire_and_end(database: Database) -> None:
    user_id = _user(database)
    with database.write() as session:
        sessions = SessionRepository(session)
        sessions.add(user_id, "a" * 64, NOW + timedelta(hours=1))
        sessions.add(user_id, "b" * 64, NOW - timedelta(seconds=1))
    with database.read() as session:
        sessions = SessionRepository(session)
        found = sessions.live_with_user("a" * 64, NOW)
        assert found is not None and found[1].username == "ada"
        assert sessions.live_with_user("b" * 64, NOW) is None
    with database.write() as session:
        assert SessionRepository(session).delete_expired(NOW) == 1
        assert SessionRepository(session).delete_for_user(user_id) == 1


def test_deleting_a_user_removes_sessions_and_keys_but_keeps_usage(database: Database) -> None:
    user_id = _user(database)
    with database.write() as session:
        SessionRepository(session).add(user_id, "c" * 64, NOW + timedelta(hours=1))
        key = ApiKeyRepository(session).add(
            user_id=user_id,
            prefix="r1s-abcdefgh",
            key_hash="d" * 64,
            name="",
            models=None,
            expires_at=None,
        )
        UsageRepository(session).add_many([_usage(user_id, key.id, NOW)])
        user = UserRepository(session).get(user_id)
        session.delete(user)
    with database.read() as session:
        assert SessionRepository(session).live_with_user("c" * 64, NOW) is None
        assert ApiKeyRepository(session).by_prefix("r1s-abcdefgh") is None
        [record] = UsageRepository(session).recent()
        assert record.user_id is None and record.api_key_id is None


def test_api_keys_by_prefix_list_and_revoke(database: Database) -> None:
    user_id = _user(database)
    with database.write() as session:
        keys = ApiKeyRepository(session)
        key = keys.add(
            user_id=user_id,
            prefix="r1s-AAAAAAAA",
            key_hash="e" * 64,
            name="ci",
            models=["tiny", "other"],
            expires_at=NOW,
        )
        with pytest.raises(IntegrityError), session.begin_nested():
            keys.add(
                user_id=user_id,
                prefix="r1s-AAAAAAAA",
                key_hash="f" * 64,
                name="",
                models=None,
                expires_at=None,
            )
        keys.revoke(key, NOW)
    with database.read() as session:
        found = ApiKeyRepository(session).by_prefix_with_user("r1s-AAAAAAAA")
        assert found is not None
        key, owner = found
        assert (key.models, key.revoked_at, key.expires_at, owner.id) == (
            ["tiny", "other"],
            NOW,
            NOW,
            user_id,
        )
        assert len(ApiKeyRepository(session).list(user_id)) == 1
        assert ApiKeyRepository(session).list(user_id + 1) == []


def test_quota_set_changes_only_the_limits_given(database: Database) -> None:
    user_id = _user(database)
    with database.write() as session:
        quotas = QuotaRepository(session)
        quotas.set(user_id=user_id, requests_per_minute=10)
        quotas.set(user_id=user_id, tokens_per_day=1000)
        row = quotas.for_user(user_id)
        assert row is not None
        assert (row.requests_per_minute, row.tokens_per_day) == (10, 1000)
        quotas.set(user_id=user_id, requests_per_minute=None)
        assert (row.requests_per_minute, row.tokens_per_day) == (None, 1000)
        with pytest.raises(ValueError):
            quotas.set(requests_per_minute=1)


def test_rate_counters_add_count_and_prune(database: Database) -> None:
    with database.write() as session:
        counters = RateCounterRepository(session)
        assert [counters.add("s", 60) for _ in range(3)] == [1, 2, 3]
        assert counters.add("s", 0) == 1
        assert counters.add("s", 60, -1) == 2
        assert counters.counts("s", (0, 60)) == (1, 2)
        assert counters.counts("other", (0, 60)) == (0, 0)
        assert counters.prune(60) == 1
        assert counters.delete_subject("s") == 1


def _usage(user_id: int | None, key_id: int | None, at: datetime, **extra: object) -> dict:
    values: dict[str, object] = {
        "created_at": at,
        "user_id": user_id,
        "api_key_id": key_id,
        "model": "tiny",
        "endpoint": "/v1/chat/completions",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": 120,
        "status": "stop",
    }
    values.update(extra)
    return values


def test_usage_totals_by_day_and_paging(database: Database) -> None:
    ada, bob = _user(database, "ada"), _user(database, "bob")
    yesterday = NOW - timedelta(days=1)
    with database.write() as session:
        UsageRepository(session).add_many(
            [
                _usage(ada, None, yesterday),
                _usage(ada, None, NOW, model="big", prompt_tokens=100),
                _usage(ada, None, NOW),
                _usage(bob, None, NOW, completion_tokens=50),
            ]
        )
    with database.read() as session:
        usage = UsageRepository(session)
        assert usage.tokens_since(NOW - timedelta(hours=1), user_id=ada) == 105 + 15
        assert usage.totals(yesterday).requests == 4
        totals = usage.totals(NOW, user_id=bob)
        assert (totals.requests, totals.prompt_tokens, totals.completion_tokens) == (1, 10, 50)
        days = usage.by_day(yesterday, user_id=ada)
        assert [(d.day, d.model, d.requests, d.prompt_tokens) for d in days] == [
            (date(2026, 3, 1), "big", 1, 100),
            (date(2026, 3, 1), "tiny", 1, 10),
            (date(2026, 2, 28), "tiny", 1, 10),
        ]
        first_page = usage.recent(user_id=ada, limit=2)
        assert len(first_page) == 2 and first_page[0].id > first_page[1].id
        rest = usage.recent(user_id=ada, before_id=first_page[-1].id)
        assert [r.created_at for r in rest] == [yesterday]
