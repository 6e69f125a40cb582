"""Conversation tests: SSE events with ids and names, and calls of the conversation routes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient

Client = TestClient | httpx.Client


@dataclass(frozen=True)
class Event:
    """One server-sent event."""

    id: int
    name: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_events(lines: Iterable[str]) -> list[Event]:
    """Events from SSE lines (comments skipped, multi-line data joined)."""
    events: list[Event] = []
    event_id = -1  # an event without an id fails the tests' id checks
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if data:
                events.append(Event(event_id, name, "\n".join(data)))
            event_id, name, data = -1, None, []
        elif line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        events.append(Event(event_id, name, "\n".join(data)))
    return events


def events_of(text: str) -> list[Event]:
    return parse_events(text.splitlines())


def joined_text(events: Iterable[Event]) -> tuple[str, str]:
    """(reasoning, content) joined from the chunk events."""
    reasoning, content = [], []
    for event in events:
        if event.name is None and event.data != "[DONE]":
            delta = event.json()["choices"][0]["delta"]
            reasoning.append(delta.get("reasoning_content", ""))
            content.append(delta.get("content", ""))
    return "".join(reasoning), "".join(content)


def final_message(events: list[Event]) -> dict[str, Any]:
    """The message of the ``done`` (or ``error``) event."""
    for event in events:
        if event.name in ("done", "error"):
            message: dict[str, Any] = event.json()["message"]
            return message
    raise AssertionError(f"no done or error event in {[e.name for e in events]}")


def check_wire(events: list[Event]) -> None:
    """start first, ids increasing, a chunk-shaped default event, done/error, [DONE] last."""
    assert events[0].name == "start" and events[0].id == 0
    ids = [event.id for event in events]
    assert ids[0] == 0 and ids == sorted(set(ids)), ids
    assert events[-1].data == "[DONE]"
    assert events[-2].name in ("done", "error")
    for event in events[1:-2]:
        assert event.name is None
        assert event.json()["object"] == "chat.completion.chunk"


def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/conversations", json=fields)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def send(client: Client, path: str, body: dict[str, Any] | None = None) -> list[Event]:
    """POST to a reply route and read the whole stream."""
    response = client.post(path, json=body or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return events_of(response.text)


def post(client: Client, conversation_id: str, content: str, **fields: Any) -> list[Event]:
    """Send a message and read its whole reply."""
    return send(
        client, f"/api/conversations/{conversation_id}/messages", {"content": content, **fields}
    )


def detail(client: Client, conversation_id: str) -> dict[str, Any]:
    response = client.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def iter_events(lines: Iterable[str]) -> Iterator[Event]:
    """Events as they arrive on a live stream."""
    block: list[str] = []
    for line in lines:
        if line == "":
            if block:
                yield from parse_events(block)
            block = []
        else:
            block.append(line)
    if block:
        yield from parse_events(block)


def take(events: Iterator[Event], count: int) -> list[Event]:
    """The next ``count`` events."""
    return [next(events) for _ in range(count)]
