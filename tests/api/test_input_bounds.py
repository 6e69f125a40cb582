"""Ids and counts past what a database column holds are a 400 naming them, on SQLite and
PostgreSQL; and a 500 from anywhere still carries the security headers (issue #14, 1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from r1serve.api.app import create_app
from r1serve.engine.fake import FakeEngine
from support import accounts as support_accounts
from support.accounts import SecureApp, secure_app, secure_settings

INT32_OVER = 2**31  # PostgreSQL INTEGER ends at 2**31 - 1
INT64_OVER = 2**63  # SQLite INTEGER ends at 2**63 - 1


@pytest.fixture
def app(database_url: str) -> Iterator[SecureApp]:
    with secure_app(settings=secure_settings(database_url=database_url)) as app:
        app.login()
        yield app


def _csrf(app: SecureApp) -> dict[str, str]:
    me = app.client.get("/api/auth/me").json()
    return {"X-CSRF-Token": me["csrf_token"]}


def _calls(big: int) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(method, url, the parameter the error must name, body) for every id and count."""
    quota = {"requests_per_minute": 5}
    tokens = max(big, INT64_OVER)  # a BIGINT column: 2**31 fits
    return [
        ("GET", f"/api/admin/keys?user_id={big}", "user_id", None),
        ("GET", f"/api/admin/usage?user_id={big}", "user_id", None),
        ("DELETE", f"/api/keys/{big}", "key_id", None),
        ("PUT", f"/api/keys/{big}/quota", "key_id", quota),
        ("PATCH", f"/api/admin/users/{big}", "user_id", {"disabled": True}),
        ("POST", f"/api/admin/users/{big}/password", "user_id", {}),
        ("PUT", f"/api/admin/users/{big}/quota", "user_id", quota),
        ("PUT", "/api/admin/users/1/quota", "requests_per_minute", {"requests_per_minute": big}),
        ("PUT", "/api/admin/users/1/quota", "tokens_per_day", {"tokens_per_day": tokens}),
        ("PUT", "/api/keys/1/quota", "requests_per_minute", {"requests_per_minute": big}),
        ("POST", "/api/keys", "requests_per_minute", {"requests_per_minute": big}),
        ("POST", "/api/keys", "tokens_per_day", {"tokens_per_day": tokens}),
    ]


@pytest.mark.parametrize("big", [INT32_OVER, INT64_OVER, 10**30])
def test_ids_and_counts_past_the_columns_are_400_naming_them(app: SecureApp, big: int) -> None:
    headers = _csrf(app)
    for method, url, param, body in _calls(big):
        response = app.client.request(method, url, json=body, headers=headers)
        assert response.status_code == 400, (method, url, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (method, url, error)
        assert error["type"] == "invalid_request_error"


def test_the_largest_ids_the_columns_hold_are_404_not_500(app: SecureApp) -> None:
    headers = _csrf(app)
    largest = INT32_OVER - 1
    for method, url, _, body in _calls(largest)[:7]:
        response = app.client.request(method, url, json=body, headers=headers)
        assert response.status_code in (200, 404), (method, url, response.text)
    quota = {"requests_per_minute": largest, "tokens_per_day": 10**12}
    response = app.client.put("/api/admin/users/1/quota", json=quota, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["quota"] == quota


def _raising_app() -> tuple[FastAPI, Any]:
    settings = secure_settings(auth=False, allowed_hosts=["testserver"])
    accounts = support_accounts.test_accounts(settings)
    app = create_app(settings, FakeEngine("hi"), accounts)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug with a secret path /work/x")

    return app, accounts


def test_a_500_from_an_unhandled_exception_carries_the_security_headers() -> None:
    from r1serve.auth import close_accounts

    app, accounts = _raising_app()
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/boom", headers={"X-Request-ID": "req-1"})
    finally:
        close_accounts(accounts)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "/work/x" not in response.text and "Traceback" not in response.text
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Request-ID"] == "req-1"
