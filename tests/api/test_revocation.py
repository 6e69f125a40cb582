"""Issue #14 items 4 and 6: a reply ends when the access of whoever started it does.

A stored-conversation reply outlives its HTTP connection, so it must re-check its starter
itself: revoking the key, disabling or demoting the user stops it (status ``stopped``, the
reason stored), and every stream that follows it ends with an error event and ``[DONE]``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from r1serve.engine.fake import FakeEngine, FakeReply
from support.accounts import secure_settings
from support.api import LiveServer, wait_for

# Never ends by itself: only max_tokens (far away) or a stop ends it.
ENDLESS = FakeReply(chunks=[f"w{i} " for i in range(50)], delay_s=0.02, eos=False, repeat=True)
BASE = "/api/conversations"


@pytest.fixture
def live() -> Iterator[LiveServer]:
    server = LiveServer(FakeEngine(ENDLESS), secure_settings())
    with server:
        server.accounts.users.create("ada", "ada-password")
        yield server


def _events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    event = "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            yield event, data if data == "[DONE]" else json.loads(data)
        elif line == "":
            event = "message"


def _reply_until(
    live: LiveServer, key: str, cut_access: Callable[[], None]
) -> tuple[list[tuple[str, Any]], str, str]:
    """Post a message with ``key``, cut access mid-reply; the events, conversation, message."""
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=live.url, timeout=30, headers=headers) as http:
        conversation = http.post(BASE, json={"settings": {"max_tokens": 4000}}).json()["id"]
        events: list[tuple[str, Any]] = []
        with http.stream(
            "POST", f"{BASE}/{conversation}/messages", json={"content": "go on forever"}
        ) as response:
            assert response.status_code == 200
            for event in _events(response):
                events.append(event)
                if len(events) == 6:
                    cut_access()
    message = events[0][1]["assistant_message"]["id"]
    return events, conversation, message


def _saved(live: LiveServer, conversation: str, message: str) -> dict[str, Any]:
    """The reply as stored, read with a fresh key of the same user."""
    key = live.accounts.keys.create(live.accounts.users.by_name("ada").id).key
    with httpx.Client(base_url=live.url, timeout=30, headers={"X-API-Key": key}) as http:
        detail = http.get(f"{BASE}/{conversation}").json()
    return next(m for m in detail["messages"] if m["id"] == message)


def _assert_stopped(events: list[tuple[str, Any]], saved: dict[str, Any], reason: str) -> None:
    kind, error = events[-2]
    assert kind == "error" and error["error"]["code"] == "access_revoked", events[-3:]
    assert reason in error["error"]["message"]
    assert error["message"]["status"] == "stopped"
    assert events[-1] == ("message", "[DONE]")
    assert saved["status"] == "stopped" and reason in (saved["error"] or "")
    assert 0 < saved["completion_tokens"] < 4000


def test_revoking_the_key_stops_its_stored_reply(live: LiveServer) -> None:
    accounts = live.accounts
    created = accounts.keys.create(accounts.users.by_name("ada").id)

    def revoke() -> None:
        accounts.keys.revoke(accounts.local_principal(), created.info.id)

    events, conversation, message = _reply_until(live, created.key, revoke)
    _assert_stopped(events, _saved(live, conversation, message), "revoked")
    assert wait_for(lambda: list(live.engine.finished.values()) == ["abort"])


def test_demoting_the_user_stops_their_stored_reply(live: LiveServer) -> None:
    accounts = live.accounts
    ada = accounts.users.by_name("ada").id
    accounts.users.set_role(ada, "admin")
    key = accounts.keys.create(ada).key
    events, conversation, message = _reply_until(
        live, key, lambda: accounts.users.set_role(ada, "user")
    )
    _assert_stopped(events, _saved(live, conversation, message), "role changed")


def test_disabling_the_user_stops_their_stored_reply(live: LiveServer) -> None:
    accounts = live.accounts
    ada = accounts.users.by_name("ada").id
    key = accounts.keys.create(ada).key
    events, conversation, message = _reply_until(
        live, key, lambda: accounts.users.set_disabled(ada, True)
    )
    accounts.users.set_disabled(ada, False)  # to read what was saved
    _assert_stopped(events, _saved(live, conversation, message), "disabled")


def test_a_follower_that_logs_out_gets_an_error_and_done_while_the_reply_goes_on(
    live: LiveServer,
) -> None:
    accounts = live.accounts
    key = accounts.keys.create(accounts.users.by_name("ada").id).key
    http = httpx.Client(base_url=live.url, timeout=30, headers={"X-API-Key": key})
    conversation = http.post(BASE, json={"settings": {"max_tokens": 4000}}).json()["id"]
    started = threading.Event()
    ids: dict[str, str] = {}

    def post() -> None:
        with http.stream(
            "POST", f"{BASE}/{conversation}/messages", json={"content": "go on"}
        ) as response:
            for _, data in _events(response):
                if not started.is_set():
                    ids["message"] = data["assistant_message"]["id"]
                    started.set()

    writer = threading.Thread(target=post, daemon=True)
    writer.start()
    assert started.wait(10)
    with httpx.Client(base_url=live.url, timeout=30) as web:
        login = web.post("/api/auth/login", json={"username": "ada", "password": "ada-password"})
        csrf = login.json()["user"]["csrf_token"]
        followed: list[tuple[str, Any]] = []
        path = f"{BASE}/{conversation}/messages/{ids['message']}/stream"
        with web.stream("GET", path) as response:
            for event in _events(response):
                followed.append(event)
                if len(followed) == 4:
                    logout = web.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
                    assert logout.status_code == 204
    kind, error = followed[-2]
    assert kind == "error" and error["error"]["code"] == "access_revoked"
    assert "session ended" in error["error"]["message"]
    assert followed[-1] == ("message", "[DONE]")
    assert live.engine.stats().running == 1  # the key that started the reply still stands
    stop = http.post(f"{BASE}/{conversation}/messages/{ids['message']}/stop")
    assert stop.json()["status"] == "stopped"
    writer.join(10)
    http.close()
