"""Test support for the conversation history: set up and inspect conversations over HTTP.

The browser tests run in local mode (no login), so these calls need no credentials and act
as the same user the page does.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from support.browser import UiServer

BASE = "/api/conversations"


def client(server: UiServer) -> httpx.Client:
    """An HTTP client for the test server."""
    return httpx.Client(base_url=server.url, timeout=30)


def list_all(server: UiServer) -> list[dict[str, Any]]:
    """Every conversation of the local user, newest first."""
    found: list[dict[str, Any]] = []
    before: str | None = None
    with client(server) as http:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if before:
                params["before"] = before
            page = http.get(BASE, params=params)
            page.raise_for_status()
            body = page.json()
            found.extend(body["data"])
            before = body.get("next_before")
            if not before:
                return found


def wipe(server: UiServer) -> None:
    """Stop every running reply, delete every conversation and clear the reply defaults, so a
    test starts empty."""
    with client(server) as http:
        for conversation in list_all(server):
            active = conversation.get("active_reply")
            if active and active.get("status") == "generating":
                http.post(f"{BASE}/{conversation['id']}/messages/{active['message_id']}/stop")
            http.delete(f"{BASE}/{conversation['id']}").raise_for_status()
        http.put("/api/me/reply-defaults", json={}).raise_for_status()


def create(server: UiServer, **fields: Any) -> dict[str, Any]:
    """A new conversation with these fields."""
    with client(server) as http:
        response = http.post(BASE, json=fields)
        response.raise_for_status()
        return dict(response.json())


def send(server: UiServer, conversation_id: str, content: str) -> list[tuple[str, Any]]:
    """Post a user message and read the reply stream to its end: [(event, data), ...]."""
    events: list[tuple[str, Any]] = []
    with (
        client(server) as http,
        http.stream(
            "POST", f"{BASE}/{conversation_id}/messages", json={"content": content}
        ) as response,
    ):
        response.raise_for_status()
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                events.append((event, data if data == "[DONE]" else json.loads(data)))
            elif line == "":
                event = "message"
    return events


def get(server: UiServer, conversation_id: str) -> dict[str, Any]:
    """A conversation with its current branch."""
    with client(server) as http:
        response = http.get(f"{BASE}/{conversation_id}")
        response.raise_for_status()
        return dict(response.json())


def wait_until_idle(
    server: UiServer, conversation_id: str, timeout_s: float = 20
) -> dict[str, Any]:
    """Wait until no reply generates in the conversation; returns the conversation."""
    deadline = time.monotonic() + timeout_s
    while True:
        conversation = get(server, conversation_id)
        if not conversation.get("active_reply"):
            return conversation
        assert time.monotonic() < deadline, f"{conversation_id} still generating"
        time.sleep(0.05)
