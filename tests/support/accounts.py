"""Account services and an app with logins on, for the HTTP tests of auth."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import argon2
from fastapi.testclient import TestClient
from pydantic import SecretStr

from r1serve.api.app import create_app
from r1serve.api.security import SESSION_COOKIE
from r1serve.auth import AuthService, close_accounts, open_accounts
from r1serve.engine.fake import FakeEngine
from r1serve.settings import Settings

ADMIN_PASSWORD = "admin-password-1"
BASE_URL = "http://127.0.0.1:8000"


def test_accounts(settings: Settings) -> AuthService:
    """Started account services over ``settings``' database; close with ``close_accounts``."""
    return open_accounts(settings, password_parameters=argon2.profiles.CHEAPEST)


def secure_settings(**overrides: Any) -> Settings:
    """Logins on, the default Host allow-list, a known admin password, a fresh database."""
    from support.api import make_settings

    defaults: dict[str, Any] = {
        "auth": True,
        "admin_password": SecretStr(ADMIN_PASSWORD),
        "allowed_hosts": [],
        "auth_recheck_s": 0.2,
        "usage_flush_interval_s": 0.05,
    }
    return make_settings(**{**defaults, **overrides})


@dataclass
class SecureApp:
    """A TestClient over an app with logins on, and the account services behind it."""

    client: TestClient
    accounts: AuthService
    engine: FakeEngine

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        """Log the client in (cookie kept by the client); returns the CSRF token."""
        response = self.client.post(
            "/api/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["user"]["csrf_token"])

    def add_user(self, name: str, role: str = "user") -> int:
        return self.accounts.users.create(name, f"{name}-password", role).id

    def key_for(self, name: str, **options: Any) -> str:
        """A new API key of the named user."""
        user = self.accounts.users.by_name(name)
        return self.accounts.keys.create(user.id, **options).key

    def session_cookie(self) -> str | None:
        return self.client.cookies.get(SESSION_COOKIE)


@contextmanager
def secure_app(
    replies: Any = "Hello there.", settings: Settings | None = None, **engine_kwargs: Any
) -> Iterator[SecureApp]:
    settings = settings or secure_settings()
    accounts = test_accounts(settings)
    engine = FakeEngine(replies, **engine_kwargs)
    try:
        with TestClient(create_app(settings, engine, accounts), base_url=BASE_URL) as client:
            yield SecureApp(client, accounts, engine)
    finally:
        close_accounts(accounts)
