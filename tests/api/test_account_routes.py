"""Cases 12-16 over HTTP: login, cookies, CSRF, throttling, keys, users, revocation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from r1serve.api.security import SESSION_COOKIE
from support.accounts import ADMIN_PASSWORD, SecureApp, secure_app

HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def app() -> Iterator[SecureApp]:
    with secure_app() as app:
        yield app


def test_login_sets_an_httponly_lax_cookie_and_a_new_id_each_time(app: SecureApp) -> None:
    first = app.client.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower() and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https gets Secure
    old = app.session_cookie()
    assert first.json()["user"]["username"] == "admin" and first.json()["user"]["csrf_token"]
    app.login()
    new = app.session_cookie()
    assert old and new and old != new
    # Logging in again ended the old session on the server.
    app.client.cookies.clear()
    app.client.cookies.set(SESSION_COOKIE, old)
    assert app.client.get("/api/auth/me").status_code == 401


def test_cookie_is_secure_over_https() -> None:
    with secure_app() as app:
        response = app.client.post(
            "https://127.0.0.1:8000/api/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
        )
        assert "Secure" in response.headers["set-cookie"]


def test_logout_ends_the_session_server_side(app: SecureApp) -> None:
    csrf = app.login()
    token = app.session_cookie()
    assert app.client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert app.client.get("/api/auth/me").status_code == 401
    app.client.cookies.clear()
    app.client.cookies.set(SESSION_COOKIE, token or "")  # a stolen copy is dead too
    assert app.client.get("/api/auth/me").status_code == 401


def test_me_returns_the_csrf_token_for_the_page(app: SecureApp) -> None:
    csrf = app.login()
    me = app.client.get("/api/auth/me").json()
    assert (me["username"], me["role"], me["method"], me["csrf_token"]) == (
        "admin",
        "admin",
        "session",
        csrf,
    )


def test_cookie_changes_need_the_csrf_token(app: SecureApp) -> None:
    csrf = app.login()
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        response = app.client.post("/api/keys", json={"name": "x"}, headers=headers)
        assert response.status_code == 403 and "CSRF" in response.text
    ok = app.client.post("/api/keys", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    assert app.client.get("/api/keys").status_code == 200  # reads need no token


def test_cross_site_post_with_the_cookie_is_refused(app: SecureApp) -> None:
    csrf = app.login()
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example:8000"):
        response = app.client.post(
            "/api/keys",
            json={"name": "x"},
            headers={"X-CSRF-Token": csrf, "Origin": origin},
        )
        assert response.status_code == 403, origin
    same = app.client.post(
        "/api/keys",
        json={"name": "x"},
        headers={"X-CSRF-Token": csrf, "Origin": "http://127.0.0.1:8000"},
    )
    assert same.status_code == 201
    # A login posted from another site is refused too (no login CSRF).
    response = app.client.post(
        "/api/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_api_keys_need_no_csrf_token(app: SecureApp) -> None:
    key = app.key_for("admin")
    response = app.client.post("/api/keys", json={"name": "ci"}, headers={"X-API-Key": key})
    assert response.status_code == 201


def test_failed_logins_get_429_with_retry_after_and_look_the_same(app: SecureApp) -> None:
    app.add_user("ada")
    unknown = app.client.post("/api/auth/login", json={"username": "nobody", "password": "x" * 9})
    wrong = app.client.post("/api/auth/login", json={"username": "ada", "password": "x" * 9})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    statuses = [
        app.client.post("/api/auth/login", json={"username": "ada", "password": "x" * 9})
        for _ in range(20)
    ]
    throttled = statuses[-1]
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"]["type"] == "rate_limit_error"


def test_a_megabyte_password_is_400_without_hashing(app: SecureApp) -> None:
    started = time.perf_counter()
    response = app.client.post(
        "/api/auth/login", json={"username": "admin", "password": "p" * 1_000_000}
    )
    assert response.status_code == 400 and "1024 bytes" in response.text
    assert time.perf_counter() - started < 2.0
    csrf = app.login()
    response = app.client.post(
        "/api/admin/users",
        json={"username": "bob", "password": "p" * 1_000_000},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 400


def test_keys_over_http_shown_once_listed_by_prefix_and_revoked(app: SecureApp) -> None:
    csrf = {"X-CSRF-Token": app.login()}
    created = app.client.post(
        "/api/keys",
        json={"name": "laptop", "models": ["fake"], "expires_in_days": 30},
        headers=csrf,
    )
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert key.startswith("r1s-") and body["prefix"] == key[:12] and body["state"] == "active"
    listed = app.client.get("/api/keys").json()
    assert [item["prefix"] for item in listed] == [key[:12]]
    assert key not in app.client.get("/api/keys").text
    assert app.client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    revoked = app.client.delete(f"/api/keys/{body['id']}", headers=csrf)
    assert revoked.json()["state"] == "revoked"
    assert app.client.get("/v1/models", headers={"X-API-Key": key}).status_code == 401


def test_users_cannot_touch_each_others_keys(app: SecureApp) -> None:
    app.add_user("ada")
    app.add_user("bob")
    bobs = app.accounts.keys.create(app.accounts.users.by_name("bob").id)
    ada_key = app.key_for("ada")
    headers = {"X-API-Key": ada_key}
    assert app.client.delete(f"/api/keys/{bobs.info.id}", headers=headers).status_code == 404
    assert (
        app.client.put(
            f"/api/keys/{bobs.info.id}/quota", json={"requests_per_minute": 1}, headers=headers
        ).status_code
        == 404
    )
    assert [k["username"] for k in app.client.get("/api/keys", headers=headers).json()] == ["ada"]
    assert app.client.get("/v1/models", headers={"X-API-Key": bobs.key}).status_code == 200


def test_admin_manages_users_over_http(app: SecureApp) -> None:
    csrf = {"X-CSRF-Token": app.login()}
    created = app.client.post("/api/admin/users", json={"username": "Ada"}, headers=csrf)
    assert created.status_code == 201
    generated = created.json()["password"]
    user_id = created.json()["user"]["id"]
    assert generated and created.json()["user"]["username"] == "ada"
    assert app.accounts.sessions.login("ada", generated, "::1")
    changed = app.client.patch(f"/api/admin/users/{user_id}", json={"role": "admin"}, headers=csrf)
    assert changed.json()["role"] == "admin"
    quota = app.client.put(
        f"/api/admin/users/{user_id}/quota",
        json={"requests_per_minute": 5, "tokens_per_day": 1000},
        headers=csrf,
    )
    assert quota.json()["quota"] == {"requests_per_minute": 5, "tokens_per_day": 1000}
    reset = app.client.post(f"/api/admin/users/{user_id}/password", json={}, headers=csrf)
    assert reset.json()["password"] not in (None, generated)
    names = [u["username"] for u in app.client.get("/api/admin/users").json()]
    assert names == ["ada", "admin"]
    bad = app.client.patch(f"/api/admin/users/{user_id}", json={"role": "root"}, headers=csrf)
    assert bad.status_code == 400
    typo = app.client.patch(f"/api/admin/users/{user_id}", json={"rol": "user"}, headers=csrf)
    assert typo.status_code == 400
    assert app.client.patch("/api/admin/users/999", json={}, headers=csrf).status_code == 404


def test_revoke_password_change_and_demotion_fail_the_next_request(app: SecureApp) -> None:
    app.add_user("ada", "admin")
    key = app.key_for("ada")
    csrf = app.login("ada", "ada-password")
    assert app.client.get("/api/admin/users", headers={"X-API-Key": key}).status_code == 200
    # Demote: the key loses admin rights at once, the web session ends.
    admin = app.accounts.users.by_name("admin")
    app.accounts.users.set_role(app.accounts.users.by_name("ada").id, "user")
    assert app.client.get("/api/admin/users", headers={"X-API-Key": key}).status_code == 403
    assert app.client.get("/api/auth/me").status_code == 401
    # Password change through the API: the other sessions end, this one is renewed.
    csrf = app.login("ada", "ada-password")
    other = app.accounts.sessions.login("ada", "ada-password", "::1")
    changed = app.client.post(
        "/api/auth/password",
        json={"current_password": "ada-password", "new_password": "ada-password-2"},
        headers={"X-CSRF-Token": csrf},
    )
    assert changed.status_code == 200 and changed.json()["csrf_token"] != csrf
    assert app.client.get("/api/auth/me").status_code == 200
    app.client.cookies.clear()
    app.client.cookies.set(SESSION_COOKIE, other.token)
    assert app.client.get("/api/auth/me").status_code == 401
    # Disable: keys fail.
    app.accounts.users.set_disabled(app.accounts.users.by_name("ada").id, True)
    assert app.client.get("/v1/models", headers={"X-API-Key": key}).status_code == 401
    assert admin.role == "admin"
