"""ASGI middleware: request body limit, request ids, security headers."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1serve.api.errors import error_response, internal_error_response
from r1serve.errors import PayloadTooLargeError, RequestError

access_log = logging.getLogger("r1serve.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _TooLarge(HTTPException):
    """Raised from receive(); an HTTPException so FastAPI's body parsing passes it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 before reading a body whose Content-Length is too big, or once the bytes exceed it.

    Memory stays flat: nothing past the limit is buffered, whether the length is declared,
    lied about, or the body is chunked without end.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(RequestError("invalid Content-Length header"))(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = PayloadTooLargeError(
            f"request body is larger than the limit of {self.max_bytes} bytes",
            code="request_too_large",
        )
        response = error_response(err, headers={"Connection": "close"})
        await response(scope, receive, send)


class RequestIdMiddleware:
    """Accept a client's ``X-Request-ID`` (or make one), keep it in scope, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        started, status = time.perf_counter(), 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # r1serve's one access log (uvicorn's is off): the id ties it to the request line
            access_log.info(
                "%s %s %d %.0fms id=%s", scope["method"], scope["path"], status,
                (time.perf_counter() - started) * 1000, request_id,
            )  # fmt: skip


PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    """Headers every response carries: CSP, nosniff, no framing, no referrer leaks.

    Starlette answers an unhandled exception from its outermost middleware, past this one; so
    this one sends that 500 itself (with the headers) and re-raises for the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        static = scope["path"].startswith("/static/")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                if static:  # revalidate (cheap, ETag) so an upgrade never mixes old modules
                    headers["Cache-Control"] = "no-cache"
                headers.setdefault("Content-Security-Policy", PAGE_CSP)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except HTTPException:  # a body over the limit: BodyLimitMiddleware answers it
            raise
        except Exception:
            if not started:
                await internal_error_response()(scope, receive, send_with_headers)
            raise
