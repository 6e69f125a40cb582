"""Quotas before generation and usage after it, on the OpenAI and the simple endpoints."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from r1serve.auth import QuotaLimits
from r1serve.engine.fake import FakeEngine, FakeReply
from support.accounts import SecureApp, secure_app, secure_settings
from support.api import HI, LiveServer, sse_payloads, wait_for

REPLY = "<think>\nHmm.\n</think>\n\nHello there, friend."


@pytest.fixture
def app() -> Iterator[SecureApp]:
    with secure_app(REPLY) as app:
        app.add_user("ada")
        yield app


def _usage(app: SecureApp, key: str) -> dict[str, Any]:
    app.accounts.usage.flush()
    response = app.client.get("/api/usage", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_generating_endpoint_records_its_usage(app: SecureApp) -> None:
    key = app.key_for("ada")
    headers = {"Authorization": f"Bearer {key}"}
    client = app.client
    chat = client.post("/v1/chat/completions", json={"messages": HI}, headers=headers)
    expected = chat.json()["usage"]
    with client.stream(
        "POST", "/v1/chat/completions", json={"messages": HI, "stream": True}, headers=headers
    ) as response:
        assert sse_payloads(response.read().decode())[-1] == "[DONE]"
    assert client.post("/v1/completions", json={"prompt": "hi"}, headers=headers).is_success
    assert client.post("/generate", json={"prompt": "hi"}, headers=headers).is_success
    with client.stream("GET", "/stream-generate", params={"prompt": "hi"}, headers=headers) as r:
        r.read()
    assert client.get("/v1/models", headers=headers).is_success  # not a generation
    usage = _usage(app, key)
    recent = list(reversed(usage["recent"]))
    assert [r["endpoint"] for r in recent] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/completions",
        "/generate",
        "/stream-generate",
    ]
    first, streamed = recent[0], recent[1]
    assert (first["prompt_tokens"], first["completion_tokens"]) == (
        expected["prompt_tokens"],
        expected["completion_tokens"],
    )
    assert streamed["completion_tokens"] == first["completion_tokens"] > 0
    assert all(r["status"] == "stop" and r["api_key_id"] is not None for r in recent)
    assert all(r["model"] == app.engine.model_name for r in recent)
    assert usage["totals"]["requests"] == 5
    assert usage["quota"]["user_tokens_today"] == usage["totals"]["total_tokens"]


def test_admin_sees_everyones_usage_users_only_their_own(app: SecureApp) -> None:
    app.add_user("bob")
    ada, bob = app.key_for("ada"), app.key_for("bob")
    for key in (ada, bob):
        app.client.post("/v1/chat/completions", json={"messages": HI}, headers={"X-API-Key": key})
    assert _usage(app, ada)["totals"]["requests"] == 1
    everyone = app.client.get("/api/admin/usage", headers={"X-API-Key": app.key_for("admin")})
    assert everyone.json()["totals"]["requests"] == 2
    ada_id = app.accounts.users.by_name("ada").id
    one = app.client.get(
        "/api/admin/usage", params={"user_id": ada_id}, headers={"X-API-Key": app.key_for("admin")}
    )
    assert one.json()["totals"]["requests"] == 1


def test_requests_per_minute_gives_429_with_retry_after_before_generating(app: SecureApp) -> None:
    ada = app.accounts.users.by_name("ada")
    app.accounts.quotas.set_user_quota(ada.id, QuotaLimits(requests_per_minute=2))
    headers = {"X-API-Key": app.key_for("ada")}
    for _ in range(2):
        ok = app.client.post("/v1/chat/completions", json={"messages": HI}, headers=headers)
        assert ok.status_code == 200
    generated_before = len(app.engine.finished)
    refused = app.client.post(
        "/v1/chat/completions", json={"messages": HI, "stream": True}, headers=headers
    )
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "requests_per_minute_exceeded"
    assert "2 requests per minute" in error["message"]
    assert len(app.engine.finished) == generated_before  # nothing was generated
    for path, kwargs in (
        ("/generate", {"json": {"prompt": "hi"}}),
        ("/v1/completions", {"json": {"prompt": "hi"}}),
    ):
        assert app.client.post(path, headers=headers, **kwargs).status_code == 429
    assert (
        app.client.get("/stream-generate", params={"prompt": "x"}, headers=headers).status_code
        == 429
    )


def test_tokens_per_day_of_a_key(app: SecureApp) -> None:
    key = app.key_for("ada", quota=QuotaLimits(tokens_per_day=10))
    headers = {"X-API-Key": key}
    assert app.client.post("/generate", json={"prompt": "hi"}, headers=headers).status_code == 200
    app.accounts.usage.flush()
    refused = app.client.post("/generate", json={"prompt": "hi"}, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "tokens_per_day_exceeded"
    assert "resets in" in refused.json()["error"]["message"]
    other = app.key_for("ada")  # the user has no limit of their own
    assert app.client.post(
        "/generate", json={"prompt": "hi"}, headers={"X-API-Key": other}
    ).is_success


SLOW = FakeReply(chunks=[f"w{i} " for i in range(400)], delay_s=0.02)


@pytest.fixture
def live() -> Iterator[LiveServer]:
    server = LiveServer(FakeEngine(SLOW), secure_settings())
    with server:
        server.accounts.users.create("ada", "ada-password")
        yield server


def test_revoking_a_key_ends_its_live_stream_soon_after(live: LiveServer) -> None:
    accounts = live.accounts
    created = accounts.keys.create(accounts.users.by_name("ada").id)
    received: list[str] = []
    done = threading.Event()

    def stream() -> None:
        try:
            with (
                httpx.Client(base_url=live.url, timeout=30) as http,
                http.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={"messages": HI, "stream": True},
                    headers={"Authorization": f"Bearer {created.key}"},
                ) as response,
            ):
                for line in response.iter_lines():
                    received.append(line)
        except httpx.HTTPError:
            pass  # the server cut the stream
        finally:
            done.set()

    worker = threading.Thread(target=stream)
    worker.start()
    assert wait_for(lambda: len(received) > 5, timeout=10)
    accounts.keys.revoke(accounts.local_principal(), created.info.id)
    assert done.wait(5), "the stream went on after its key was revoked"
    _assert_ends_with_access_error(received, "revoked")
    assert wait_for(lambda: list(live.engine.finished.values()) == ["abort"])
    assert len(live.engine.fake_runner.decode_batches) < 300
    accounts.usage.flush()
    [record] = accounts.reports.report(user_id=created.info.user_id).recent
    assert record.status == "cancelled" and record.completion_tokens > 0
    worker.join()


def test_disabling_the_user_ends_a_web_session_stream(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        login = http.post("/api/auth/login", json={"username": "ada", "password": "ada-password"})
        csrf = login.json()["user"]["csrf_token"]
        ended = threading.Event()

        def stop_ada() -> None:
            wait_for(lambda: live.engine.stats().running == 1, timeout=10)
            live.accounts.users.set_disabled(live.accounts.users.by_name("ada").id, True)
            ended.set()

        threading.Thread(target=stop_ada).start()
        lines: list[str] = []
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"messages": HI, "stream": True},
            headers={"X-CSRF-Token": csrf},
        ) as response:
            for line in response.iter_lines():
                lines.append(line)
        assert ended.is_set()
        _assert_ends_with_access_error(lines, "session ended")  # disabling ends sessions
    assert wait_for(lambda: list(live.engine.finished.values()) == ["abort"])


def _assert_ends_with_access_error(lines: list[str], reason: str) -> None:
    """The stream ended well-formed: OpenAI's error shape in a data line, then [DONE]."""
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]", lines[-5:]
    error = json.loads(data[-2])["error"]
    assert error["code"] == "access_revoked" and error["type"] == "authentication_error"
    assert reason in error["message"]


def test_the_openai_client_works_with_a_key_and_fails_without(live: LiveServer) -> None:
    key = live.accounts.keys.create(live.accounts.users.by_name("ada").id).key
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model=live.engine.model_name, messages=HI, max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    stranger = openai.OpenAI(base_url=f"{live.url}/v1", api_key="r1s-" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
