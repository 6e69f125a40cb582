"""An ``AuthService`` on each test database, with cheap argon2 and a clock the test moves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import argon2
import pytest
from pydantic import SecretStr

from r1serve.auth import AuthService, Principal
from r1serve.settings import Settings
from r1serve.storage import Database

ADMIN_PASSWORD = "admin-password-1"


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self, start: datetime = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth_settings(db_settings: Settings) -> Settings:
    return db_settings.model_copy(
        update={"admin_password": SecretStr(ADMIN_PASSWORD), "usage_flush_interval_s": 0.05}
    )


@pytest.fixture
def auth(auth_settings: Settings, database: Database, clock: FakeClock) -> Iterator[AuthService]:
    """Started: the first admin exists, the usage writer runs."""
    service = AuthService(
        auth_settings, database, password_parameters=argon2.profiles.CHEAPEST, clock=clock
    )
    service.start()
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def admin(auth: AuthService) -> Principal:
    return auth.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1").principal


@pytest.fixture
def make_user(auth: AuthService) -> Callable[..., Principal]:
    """Create a user (password: NAME-password) and log in as them."""

    def make(name: str = "ada", role: str = "user") -> Principal:
        auth.users.create(name, f"{name}-password", role)
        return auth.sessions.login(name, f"{name}-password", "127.0.0.1").principal

    return make
