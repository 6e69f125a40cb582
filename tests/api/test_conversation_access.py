"""Case 18 on both databases: another user's ids are 404 on every route; quotas and usage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from r1serve.auth import QuotaLimits
from support.accounts import SecureApp, secure_app, secure_settings
from support.conversations import create, detail, events_of, final_message, post

PREFIX = "/api/conversations"
BODIES = {"PATCH": {"title": "mine now"}, "POST": {"content": "hijack"}}
TOOL_RESULTS = {"results": [{"tool_call_id": "call_1", "content": "hijack"}]}


@pytest.fixture
def app(database_url: str) -> Iterator[SecureApp]:
    with secure_app("The answer.", settings=secure_settings(database_url=database_url)) as app:
        app.add_user("ada")
        app.add_user("bob")
        yield app


def _as(app: SecureApp, name: str) -> dict[str, str]:
    return {"X-API-Key": app.key_for(name)}


def _id_routes(app: SecureApp) -> list[tuple[str, str]]:
    """Every (method, path) of the app that takes a conversation id."""
    schema = app.client.app.openapi()  # type: ignore[attr-defined]
    routes = [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if "{conversation_id}" in path
        for method in item
    ]
    assert len(routes) == 11, routes  # a new route must be added to this walk
    return sorted(routes, key=lambda r: r[0] == "DELETE")  # delete last


def _fill(path: str, cid: str, message: dict[str, Any]) -> str:
    # edit takes a user message, the others a reply
    mid = message["parent_id"] if path.endswith("/edit") else message["id"]
    return path.replace("{conversation_id}", cid).replace("{message_id}", mid)


def test_another_users_conversation_is_404_on_every_route(app: SecureApp) -> None:
    ada, bob = _as(app, "ada"), _as(app, "bob")
    client = app.client
    client.headers.update(ada)
    cid = create(client, title="Ada's secret plans")["id"]
    reply = final_message(post(client, cid, "my secret"))
    before = detail(client, cid)
    client.headers.update(bob)
    bobs = create(client)["id"]
    bobs_reply = final_message(post(client, bobs, "bob's own"))
    missing = client.get(f"{PREFIX}/{'0' * 24}").json()

    for method, template in _id_routes(app):
        for conversation, message in ((cid, reply), ("0" * 24, reply), (bobs, reply)):
            if conversation == bobs and "{message_id}" not in template:
                continue  # Bob's own conversation: only Ada's message ids are foreign
            path = _fill(template, conversation, message)
            body = BODIES.get(method) if method in ("PATCH", "POST") else None
            if template.endswith("/tool-results"):
                body = TOOL_RESULTS
            response = client.request(method, path, json=body, headers=bob)
            assert response.status_code == 404, (method, path, response.text)
            error = response.json()["error"]
            assert error["type"] == "not_found_error"
            if "{message_id}" not in template or conversation != bobs:
                assert error == missing["error"], (method, path)

    client.headers.update(ada)
    after = detail(client, cid)
    assert after == before  # nothing renamed, continued, stopped or deleted
    client.headers.update(bob)
    assert [m["content"] for m in detail(client, bobs)["messages"]][-1] == bobs_reply["content"]


def test_lists_search_and_exports_show_only_my_conversations(app: SecureApp) -> None:
    client = app.client
    client.headers.update(_as(app, "ada"))
    cid = create(client, title="Ada")["id"]
    post(client, cid, "needle in ada's haystack")
    exported = client.get(f"{PREFIX}/export").content
    client.headers.update(_as(app, "bob"))
    assert client.get(PREFIX).json()["data"] == []
    assert client.get(PREFIX, params={"q": "needle"}).json()["data"] == []
    assert client.get(f"{PREFIX}/export").json()["conversations"] == []
    [copy] = client.post(f"{PREFIX}/import", content=exported).json()["imported"]
    assert copy != cid and [c["id"] for c in client.get(PREFIX).json()["data"]] == [copy]
    client.headers.update(_as(app, "ada"))
    assert [c["id"] for c in client.get(PREFIX).json()["data"]] == [cid]


def test_web_sessions_need_the_csrf_token_for_changes(app: SecureApp) -> None:
    csrf = app.login("ada", "ada-password")
    client = app.client
    assert client.post(PREFIX, json={}).status_code == 403
    cid = create_with(client, csrf)
    assert client.get(f"{PREFIX}/{cid}").status_code == 200
    assert client.delete(f"{PREFIX}/{cid}").status_code == 403
    response = client.post(
        f"{PREFIX}/{cid}/messages", json={"content": "hi"}, headers={"X-CSRF-Token": csrf}
    )
    assert final_message(events_of(response.text))["status"] == "complete"


def create_with(client: Any, csrf: str) -> str:
    response = client.post(PREFIX, json={}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_replies_count_against_quotas_and_record_usage(app: SecureApp) -> None:
    client = app.client
    key = app.key_for("ada")
    client.headers.update({"X-API-Key": key})
    ada = app.accounts.users.by_name("ada")
    app.accounts.quotas.set_user_quota(ada.id, QuotaLimits(requests_per_minute=2))
    cid = create(client)["id"]
    reply = final_message(post(client, cid, "one"))
    path = f"{PREFIX}/{cid}/messages/{reply['id']}/regenerate"
    assert client.post(path).status_code == 200
    refused = client.post(f"{PREFIX}/{cid}/messages", json={"content": "three"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert len(detail(client, cid)["messages"]) == 2  # the refused message was not stored
    app.accounts.usage.flush()
    recent = client.get("/api/usage").json()["recent"]
    assert [r["endpoint"] for r in reversed(recent)] == [
        f"{PREFIX}/{{conversation_id}}/messages",
        f"{PREFIX}/{{conversation_id}}/messages/{{message_id}}/regenerate",
    ]
    assert recent[-1]["completion_tokens"] == reply["completion_tokens"]
    assert recent[-1]["prompt_tokens"] == reply["prompt_tokens"]
    assert re.fullmatch(r"stop", recent[-1]["status"])
