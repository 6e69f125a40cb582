"""Case 11 and 17: every route is closed without credentials; Host, CORS, bind checks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r1serve.api.app import create_app
from r1serve.api.ollama_wire import OLLAMA_PATHS
from r1serve.api.security import PUBLIC_PATHS, check_bind, is_loopback
from r1serve.engine.fake import FakeEngine
from r1serve.errors import ConfigError
from r1serve.settings import Settings
from support.accounts import SecureApp, secure_app, secure_settings

EXTRA_PATHS = ["/docs", "/redoc", "/metrics", "/openapi.json", "/admin", "/v1/unknown"]


@pytest.fixture
def app() -> Iterator[SecureApp]:
    with secure_app() as app:
        app.add_user("ada")
        yield app


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI schema, path parameters filled in, plus extras."""
    schema = client.app.openapi()  # type: ignore[attr-defined]
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "1", path))
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(routes) > 15, routes
    return routes + [("GET", path) for path in EXTRA_PATHS]


def _call(client: TestClient, method: str, path: str, **kwargs: Any) -> Any:
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.request(method, path, **body, **kwargs)


def _protected(path: str) -> bool:
    return path not in PUBLIC_PATHS


def test_every_route_needs_credentials(app: SecureApp) -> None:
    key = app.key_for("ada")
    for method, path in _routes(app.client):
        if not _protected(path):
            continue
        cases: dict[str, dict[str, Any]] = {
            "none": {},
            "basic scheme": {"headers": {"Authorization": "Basic YWRhOmFkYS1wYXNzd29yZA=="}},
            "token scheme": {"headers": {"Authorization": f"Token {key}"}},
            "bare key": {"headers": {"Authorization": key}},
            "key in query": {"params": {"api_key": key}},
            "key in odd query": {"params": {"q": key}},
            "unknown header": {"headers": {"Api-Key": key}},
            "made-up key": {"headers": {"X-API-Key": "r1s-" + "x" * 43}},
        }
        for case, kwargs in cases.items():
            response = _call(app.client, method, path, **kwargs)
            assert response.status_code == 401, (method, path, case, response.text)
            error = response.json()["error"]
            if path in OLLAMA_PATHS:  # Ollama's own shape: {"error": "…"}
                assert isinstance(error, str) and error, (method, path, case)
            else:
                assert error["type"] == "authentication_error"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_key_in_the_query_is_refused_even_with_a_valid_header(app: SecureApp) -> None:
    key = app.key_for("ada")
    response = app.client.get("/v1/models", params={"api_key": key}, headers={"X-API-Key": key})
    assert response.status_code == 401
    assert "not accepted" in response.json()["error"]["message"]


def test_public_routes_answer_without_credentials(app: SecureApp) -> None:
    assert app.client.get("/health").status_code == 200
    assert app.client.get("/").status_code == 200
    response = app.client.post("/api/auth/login", json={})
    assert response.status_code == 400  # validation, not authentication


def test_users_get_403_on_every_admin_route_with_key_and_session(app: SecureApp) -> None:
    key = app.key_for("ada")
    admin_routes = [(m, p) for m, p in _routes(app.client) if p.startswith("/api/admin/")]
    assert len(admin_routes) >= 6
    for method, path in admin_routes:
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            response = _call(app.client, method, path, headers=headers)
            assert response.status_code == 403, (method, path, headers, response.text)
    csrf = app.login("ada", "ada-password")
    for method, path in admin_routes:
        response = _call(app.client, method, path, headers={"X-CSRF-Token": csrf})
        assert response.status_code == 403, (method, path, response.text)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_both_headers_get_exactly_the_same_checks(app: SecureApp, header: str) -> None:
    def send(key: str) -> int:
        value = f"Bearer {key}" if header == "Authorization" else key
        return app.client.get("/v1/models", headers={header: value}).status_code

    assert send(app.key_for("ada")) == 200
    scoped = app.key_for("ada", models=["some-other-model"])
    generation = app.client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={header: f"Bearer {scoped}" if header == "Authorization" else scoped},
    )
    assert generation.status_code == 403 and "may not use model" in generation.text
    revoked = app.key_for("ada")
    app.accounts.keys.revoke(
        app.accounts.local_principal(), app.accounts.keys.list(app.accounts.local_principal())[0].id
    )
    assert send(revoked) == 401


def test_two_different_keys_in_the_two_headers_are_refused(app: SecureApp) -> None:
    first, second = app.key_for("ada"), app.key_for("ada")
    response = app.client.get(
        "/v1/models", headers={"Authorization": f"Bearer {first}", "X-API-Key": second}
    )
    assert response.status_code == 401 and "different keys" in response.text
    same = app.client.get(
        "/v1/models", headers={"Authorization": f"Bearer {first}", "X-API-Key": first}
    )
    assert same.status_code == 200


def test_foreign_host_header_is_403_everywhere(app: SecureApp) -> None:
    for path in ("/health", "/", "/v1/models", "/api/auth/login"):
        response = app.client.get(path, headers={"Host": "evil.example:8000"})
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "host_not_allowed"
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert app.client.get("/health", headers={"Host": host}).status_code == 200


def test_configured_hosts_replace_the_defaults() -> None:
    settings = secure_settings(allowed_hosts=["chat.example.org"])
    with secure_app(settings=settings) as app:
        ok = app.client.get("/health", headers={"Host": "chat.example.org"})
        assert ok.status_code == 200
        assert app.client.get("/health", headers={"Host": "localhost"}).status_code == 403


def _preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        "/v1/models",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def test_cors_is_off_by_default(app: SecureApp) -> None:
    response = app.client.get("/health", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers
    assert (
        "access-control-allow-origin" not in _preflight(app.client, "https://app.example").headers
    )


def test_cors_for_listed_origins_with_credentials() -> None:
    with secure_app(settings=secure_settings(cors_origins=["https://app.example"])) as app:
        response = _preflight(app.client, "https://app.example")
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert response.headers["access-control-allow-credentials"] == "true"
        other = _preflight(app.client, "https://evil.example")
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_cors_star_never_comes_with_credentials() -> None:
    with secure_app(settings=secure_settings(cors_origins=["*"])) as app:
        response = app.client.get("/health", headers={"Origin": "https://any.example"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
        preflight = _preflight(app.client, "https://any.example")
        assert preflight.headers.get("access-control-allow-credentials") != "true"


def test_security_headers_on_the_page_and_on_errors(app: SecureApp) -> None:
    for response in (app.client.get("/"), app.client.get("/v1/models")):
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_default_bind_is_loopback_and_no_auth_needs_it() -> None:
    assert Settings(_env_file=None).host == "127.0.0.1"  # type: ignore[call-arg]
    for host in ("127.0.0.1", "::1", "localhost", "127.1.2.3"):
        assert is_loopback(host)
        check_bind(secure_settings(auth=False, host=host))
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="loopback"):
            check_bind(secure_settings(auth=False, host=host))
        check_bind(secure_settings(auth=True, host=host))  # with logins: fine
    with pytest.raises(ConfigError, match="loopback"):
        create_app(secure_settings(auth=False, host="0.0.0.0"), FakeEngine("x"))


def test_no_auth_mode_runs_as_the_local_admin() -> None:
    with secure_app(settings=secure_settings(auth=False)) as app:
        me = app.client.get("/api/auth/me").json()
        assert (me["username"], me["role"], me["method"]) == ("admin", "admin", "local")
        assert me["auth_enabled"] is False
        assert app.client.get("/v1/models").status_code == 200


def test_start_up_banner_keeps_the_generated_password_whole_on_a_narrow_terminal() -> None:
    import io

    from rich.console import Console

    from r1serve.api.server import announce

    password = "LaouIjcXtPnjddRQeTdVJw"
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=False, color_system=None)
    settings = Settings(_env_file=None, auth=True)
    announce(console, settings, "http://127.0.0.1:8000", password)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("┌") and lines[-1].startswith("└")  # one box, the login inside
    assert len(lines) == 8  # one line per message, never broken mid-way
    assert "http://127.0.0.1:8000" in lines[1]
    assert any(line.startswith("│ user:     admin ") for line in lines)
    assert any(line.startswith(f"│ password: {password} ") for line in lines)
    assert len({len(line) for line in lines}) == 1  # the box is closed on the right
