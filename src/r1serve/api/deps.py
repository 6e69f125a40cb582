"""FastAPI dependencies and helpers shared by the routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from r1serve.api.service import CompletionService
from r1serve.settings import Settings

T = TypeVar("T")


def get_service(request: Request) -> CompletionService:
    service: CompletionService = request.app.state.service
    return service


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def request_id(request: Request, prefix: str) -> str:
    """The response id: the client's X-Request-ID when it sent one."""
    rid: str = request.state.request_id
    return f"{prefix}-{rid}"


class ClientGone(Exception):
    """The client disconnected before the response was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it (and so the generation) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientGone
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
