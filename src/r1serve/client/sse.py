"""Reading Server-Sent Events from an httpx streaming response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx


def _payloads(lines: Iterator[str]) -> Iterator[str]:
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield "\n".join(data)
            data = []
    if data:
        yield "\n".join(data)


def iter_json(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an OpenAI-style stream, until ``[DONE]``."""
    for payload in _payloads(response.iter_lines()):
        if payload == "[DONE]":
            return
        yield json.loads(payload)


async def aiter_json(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Async version of ``iter_json``."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            payload = "\n".join(data)
            data = []
            if payload == "[DONE]":
                return
            yield json.loads(payload)
