"""The local Redis and PostgreSQL for the replica tests, each test run isolated.

Redis: a key prefix of its own per run (pub/sub channels ignore database numbers, prefixes do
not), whose keys are deleted at the end. PostgreSQL: a database of its own, dropped at the end.
Both skip the tests, saying why, only when the service does not answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from support.databases import POSTGRES_HOST, find_postgres, fresh_postgres_database

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url_or_skip() -> str:
    """The local Redis's URL; the test is skipped, saying so, if it does not answer."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} does not answer ({exc}); the replica tests need it")
    finally:
        client.close()
    return REDIS_URL


def unique_prefix() -> str:
    return f"r1serve-test-{secrets.token_hex(6)}:"


def drop_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def redis_prefix() -> Iterator[tuple[str, str]]:
    """(URL, a fresh key prefix) of the local Redis; the prefix's keys go at the end."""
    url = redis_url_or_skip()
    prefix = unique_prefix()
    try:
        yield url, prefix
    finally:
        drop_keys(url, prefix)


def _postgres_admin_url_or_skip() -> str:
    url, errors = find_postgres()
    if url is None:
        pytest.skip(f"PostgreSQL at {POSTGRES_HOST} does not answer; the replica tests need it. "
                    + "; ".join(errors))  # fmt: skip
    return url


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (with its connections) at the end."""
    with fresh_postgres_database(_postgres_admin_url_or_skip(), "r1serve_replicas") as url:
        yield url
