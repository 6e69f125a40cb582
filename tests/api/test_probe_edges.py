"""The smaller findings of the hostile probe (issue #14, 7): /metrics access, parameter names in
context errors, an oversized URL, and the OpenAPI document's errors and streams."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from r1serve.api.app import create_app
from r1serve.api.ollama_wire import OLLAMA_PATHS
from r1serve.engine.fake import FakeEngine
from support.accounts import secure_app, secure_settings
from support.api import LiveServer, make_settings

Build = Callable[..., tuple[TestClient, FakeEngine]]
SCRAPE_TOKEN = "scrape-token-0123456789"


def test_metrics_need_an_admin_or_the_scrape_token() -> None:
    settings = secure_settings(metrics_token=SecretStr(SCRAPE_TOKEN))
    with secure_app(settings=settings) as app:
        app.add_user("ada")
        user_key, admin_key = app.key_for("ada"), app.key_for("admin")

        def status(headers: dict[str, str]) -> int:
            return app.client.get("/metrics", headers=headers).status_code

        assert status({}) == 401
        assert status({"Authorization": f"Bearer {user_key}"}) == 403
        assert status({"Authorization": "Bearer wrong-token"}) == 401
        assert status({"X-API-Key": SCRAPE_TOKEN}) == 401  # the token is a bearer token only
        assert status({"Authorization": f"Bearer {admin_key}"}) == 200
        response = app.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
        assert response.status_code == 200
        assert "r1serve_requests_running" in response.text
        # The token opens /metrics and nothing else.
        other = app.client.get("/v1/models", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
        assert other.status_code == 401


def test_a_user_login_cannot_read_metrics() -> None:
    with secure_app() as app:
        app.add_user("ada")
        app.login("ada", "ada-password")
        assert app.client.get("/metrics").status_code == 403


LONG = "word " * 100  # 500 tokens of the fake tokenizer's bytes


@pytest.mark.parametrize(
    ("method", "url", "body", "param"),
    [
        ("POST", "/v1/completions", {"prompt": LONG}, "prompt"),
        ("POST", "/v1/completions", {"prompt": LONG, "stream": True}, "prompt"),
        ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 300}, "max_tokens"),
        ("POST", "/generate", {"prompt": LONG}, "prompt"),
        ("POST", "/generate", {"prompt": "hi", "max_length": 300}, "max_length"),
        ("GET", f"/stream-generate?prompt={LONG}", None, "prompt"),
        ("GET", "/stream-generate?prompt=hi&max_length=300", None, "max_length"),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": LONG}]},
            "messages",
        ),
    ],
)
def test_context_errors_name_the_routes_own_parameter(
    make_client: Build, method: str, url: str, body: dict[str, Any] | None, param: str
) -> None:
    client, _ = make_client(context_length=256, max_seq_len=256)
    response = client.request(method, url, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == param, error


def _raw_get(port: int, target: bytes) -> tuple[bytes, bytes]:
    """Send one GET by hand (httpx refuses long URLs); the status line and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        # The server may answer and close before the rest of the URL arrived.
        with contextlib.suppress(ConnectionResetError):
            connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        try:
            while chunk := connection.recv(65536):
                data += chunk
        except ConnectionResetError:  # closed with our unread URL bytes still queued
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("size", [70_000, 1_000_000])
def test_an_oversized_url_gets_a_json_414(size: int) -> None:
    with LiveServer(FakeEngine("hi")) as server:
        head, body = _raw_get(server.port, b"/health?q=" + b"a" * size)
        assert head.startswith(b"HTTP/1.1 414"), head
        assert b"content-type: application/json" in head.lower()
        assert b"x-content-type-options: nosniff" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "url_too_long" and error["type"] == "invalid_request_error"
        # A URL just under the limit still works, and so does the next connection.
        head, _ = _raw_get(server.port, b"/health?q=" + b"a" * 60_000)
        assert head.startswith(b"HTTP/1.1 200"), head


def test_a_request_the_parser_refuses_gets_json() -> None:
    with LiveServer(FakeEngine("hi")) as server:
        head, body = _raw_get(server.port, b"/he\x00alth")
        assert head.startswith(b"HTTP/1.1 400"), head
        assert json.loads(body)["error"]["code"] == "invalid_http_request"


def test_the_openapi_document_lists_errors_and_streams() -> None:
    document = create_app(make_settings(), FakeEngine("hi")).openapi()
    for path, item in document["paths"].items():
        shape = "OllamaErrorResponse" if path in OLLAMA_PATHS else "ErrorResponse"
        for method, operation in item.items():
            responses = operation["responses"]
            for code in ("400", "401", "403", "404", "429"):
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{shape}"}, (method, path, code)
            assert "422" not in responses, (method, path)  # validation errors are 400 here
    for method, path in [
        ("post", "/v1/chat/completions"),
        ("post", "/v1/completions"),
        ("get", "/stream-generate"),
        ("post", "/api/conversations/{conversation_id}/messages"),
    ]:
        content = document["paths"][path][method]["responses"]["200"]["content"]
        # Before OpenAPI 3.2 a stream's schema describes one event (what schemathesis checks).
        assert content["text/event-stream"]["schema"]["required"] == ["data"], path
