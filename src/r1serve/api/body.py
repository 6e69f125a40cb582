"""Request bodies off the event loop, and admission before them (issue #14, item 3).

FastAPI reads and parses a JSON body with ``json.loads`` on the event loop: a 4 MB prompt holds
every stream and ``/health`` for tens of milliseconds, eight at once for hundreds. Routes of
``OffLoopRoute`` parse a body over ``OFF_LOOP_BYTES`` in a worker thread instead (Starlette
keeps the parsed body, and FastAPI uses it), and the generating routes (those that depend on
``admit_generation``) check the engine's admission before they read the body at all, so that
the excess of a burst gets its 503 without its prompt being read and parsed. An admitted request
holds its place from then on (``PromptWorkers.hold``), so that the rest of a burst sees it.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from r1serve.api.metering import admit_generation
from r1serve.generation.prompts import PromptWorkers

OFF_LOOP_BYTES = 64 * 1024


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def parse_json_off_loop(request: Request) -> None:
    """Parse a big JSON body in a worker thread; FastAPI then finds it parsed."""
    if not _is_json(request.headers.get("content-type")):
        return
    body = await request.body()
    if len(body) <= OFF_LOOP_BYTES:
        return
    try:
        parsed = await anyio.to_thread.run_sync(json.loads, body)  # anyio's bounded pool
    except json.JSONDecodeError as exc:  # as FastAPI reports it
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                 "input": {}, "ctx": {"error": exc.msg}}  # fmt: skip
        raise RequestValidationError([error]) from exc
    request._json = parsed  # what Request.json() returns from now on


def _generates(dependant: Dependant) -> bool:
    """Whether ``admit_generation`` is among the dependencies, however deep."""
    return any(d.call is admit_generation or _generates(d) for d in dependant.dependencies)


def _admit_any(request: Request) -> PromptWorkers:
    """Before the body (and so its ``model``) is read: refuse only when every served model
    would (with one model, exactly that model's admission); the prompt workers of the first
    that admits, where the request then holds its place."""
    first: Exception | None = None
    for service in request.app.state.services:
        try:
            service.prompts.admit_at_door()
        except Exception as exc:  # the engine's OverloadedError
            first = first or exc
        else:
            return service.prompts
    if first is not None:
        raise first
    raise RuntimeError("no served model")


class OffLoopRoute(APIRoute):
    """An APIRoute that admits generating requests, then parses big JSON bodies, off the loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        generates = _generates(self.dependant)

        async def route(request: Request) -> Response:
            if not generates:
                await parse_json_off_loop(request)
                return await handler(request)
            with _admit_any(request).hold():  # the burst behind it sees it counted at once
                await parse_json_off_loop(request)
                return await handler(request)

        return route
