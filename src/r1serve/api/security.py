"""Secure defaults at the HTTP edge: who is calling, from which site, to which host name.

Authentication is a middleware, not a per-route dependency, so a route added later is closed
unless it is listed in ``PUBLIC_PATHS``: the app denies by default. Keys are accepted as
``Authorization: Bearer r1s-…`` and ``X-API-Key: r1s-…`` and go through exactly one check.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

import anyio
from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1serve.api.errors import error_response
from r1serve.auth import AuthService, Principal
from r1serve.auth.tokens import same_secret
from r1serve.errors import AuthenticationError, ConfigError, PermissionDeniedError, R1ServeError
from r1serve.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "r1s_session"
CSRF_HEADER = "x-csrf-token"
PUBLIC_PATHS = frozenset({"/", "/health", "/api/auth/login"})
PUBLIC_PREFIXES = ("/static/",)
METRICS_PATH = "/metrics"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY_QUERY_NAMES = frozenset({"api_key", "api-key", "apikey", "key", "access_token", "token"})
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to serve without auth on anything but a loopback address."""
    if not settings.auth and not is_loopback(settings.host):
        raise ConfigError(
            f"--no-auth serves everyone without a login, so it may only bind a loopback address "
            f"(127.0.0.1, ::1 or localhost), not {settings.host!r}. Bind 127.0.0.1, or keep "
            "authentication on and create users with `r1serve users add`."
        )
    if "*" in settings.allowed_hosts:
        raise ConfigError("allowed_hosts must name hosts; '*' would undo DNS-rebinding protection")


def allowed_host_names(settings: Settings) -> frozenset[str]:
    """Host header values the server answers to (lower case, port optional)."""
    if settings.allowed_hosts:
        return frozenset(host.lower() for host in settings.allowed_hosts)
    bound = settings.host.lower()
    if ":" in bound and not bound.startswith("["):
        bound = f"[{bound}]"
    extra = () if bound in ("0.0.0.0", "[::]") else (bound,)
    return frozenset((*_LOOPBACK_NAMES, *extra))


def _host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    host = host_header.strip().lower()
    if host in allowed:
        return True
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in allowed


class HostAllowListMiddleware:
    """403 for a Host header outside the allow-list, so DNS rebinding reaches nothing."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if not _host_allowed(host, self.allowed):
                error = PermissionDeniedError(
                    f"host {host[:100]!r} is not served here; add it to R1SERVE_ALLOWED_HOSTS",
                    code="host_not_allowed",
                )
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _key_in_query(query_string: bytes) -> bool:
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return False
    return any(
        name.lower() in _KEY_QUERY_NAMES or "r1s-" in value or "r1s-" in name
        for name, value in pairs
    )


def _presented_key(headers: Headers) -> str | None:
    """The API key from Authorization or X-API-Key; both must agree if both are sent."""
    authorizations = headers.getlist("authorization")
    api_keys = headers.getlist("x-api-key")
    if len(authorizations) > 1 or len(api_keys) > 1:
        raise AuthenticationError("send one Authorization or X-API-Key header, not several")
    from_bearer = None
    if authorizations:
        scheme, _, value = authorizations[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError(
                "unsupported Authorization header; send 'Authorization: Bearer r1s-…'"
            )
        from_bearer = value.strip()
    from_header = api_keys[0].strip() if api_keys else None
    if from_bearer is not None and from_header is not None and from_bearer != from_header:
        raise AuthenticationError("Authorization and X-API-Key name different keys; send one")
    return from_bearer if from_bearer is not None else from_header


def _is_metrics_token(scope: Scope, settings: Settings) -> bool:
    """Whether a /metrics request carries the configured scrape token as its bearer token."""
    if scope["path"] != METRICS_PATH or settings.metrics_token is None:
        return False
    authorizations = Headers(scope=scope).getlist("authorization")
    if len(authorizations) != 1:
        return False
    scheme, _, value = authorizations[0].strip().partition(" ")
    expected = settings.metrics_token.get_secret_value()
    return scheme.lower() == "bearer" and bool(expected) and same_secret(value.strip(), expected)


def resolve_caller(accounts: AuthService, scope: Scope) -> Principal:
    """The caller of a request, from its key or its session cookie (blocking: database)."""
    if not accounts.settings.auth:
        return accounts.local_principal()
    if _key_in_query(scope.get("query_string", b"")):
        raise AuthenticationError(
            "API keys in the URL are not accepted (URLs end up in logs); send the key as "
            "'Authorization: Bearer r1s-…' or 'X-API-Key: r1s-…'"
        )
    headers = Headers(scope=scope)
    key = _presented_key(headers)
    session_token = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
    return accounts.authenticate(session_token=session_token or None, api_key=key)


def check_origin(scope: Scope, settings: Settings) -> None:
    """403 for a state-changing request sent by a page of another site."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is None or origin in settings.cors_origins or "*" in settings.cors_origins:
        return
    if origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        raise PermissionDeniedError(
            f"cross-site request from {origin[:100]!r} refused", code="cross_site_request"
        )


def _auth_error(error: R1ServeError, send_headers: dict[str, str] | None = None) -> ASGIApp:
    headers = dict(send_headers or {})
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="r1serve"'
    return error_response(error, headers=headers)


class AuthMiddleware:
    """Resolve the caller of every non-public request; CSRF and Origin checks for changes.

    Streams re-check the caller every ``auth_recheck_s`` seconds while they send (see
    ``_StreamGuard``; generation streams end themselves first through ``api.access``).
    """

    def __init__(self, app: ASGIApp, accounts: Callable[[], AuthService]) -> None:
        self.app = app
        self.accounts = accounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accounts = self.accounts()
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if method in UNSAFE_METHODS:
                check_origin(scope, accounts.settings)
            if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
                await self.app(scope, receive, send)
                return
            if _is_metrics_token(scope, accounts.settings):
                scope.setdefault("state", {})["metrics_token"] = True
                await self.app(scope, receive, send)
                return
            caller = await anyio.to_thread.run_sync(resolve_caller, accounts, scope)
            if caller.method == "session" and method in UNSAFE_METHODS:
                headers = Headers(scope=scope)
                token = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE, "")
                accounts.sessions.check_csrf(token, headers.get(CSRF_HEADER))
        except R1ServeError as error:
            await _auth_error(error)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = caller
        if caller.method == "local":  # nothing to re-check: local mode's access never ends
            await self.app(scope, receive, send)
            return
        guard = _StreamGuard(accounts, caller, receive, send)
        await self.app(scope, guard.receive, guard.send)


class _StreamGuard:
    """Re-checks the caller between body chunks; a stream that outlives its access is cut.

    Generation streams and reply streams end themselves well-formed (an error event, then
    their end) through ``api.access``; this is the backstop for any other long body, and
    waits two recheck intervals so that it never cuts one of those short.
    """

    def __init__(self, accounts: AuthService, caller: Principal, receive: Receive, send: Send):
        self.accounts = accounts
        self.caller = caller
        self.interval = accounts.settings.auth_recheck_s
        self.checked_at = time.monotonic()
        self.cut_at: float | None = None
        self.revoked = anyio.Event()
        self._receive = receive
        self._send = send

    async def send(self, message: Message) -> None:
        if self.revoked.is_set():
            raise OSError("credentials revoked")
        if message["type"] == "http.response.body" and message.get("more_body"):
            now = time.monotonic()
            if self.cut_at is None and now - self.checked_at >= self.interval:
                self.checked_at = now
                valid = await anyio.to_thread.run_sync(self.accounts.still_valid, self.caller)
                if not valid:
                    self.cut_at = now + 2 * self.interval
            if self.cut_at is not None and now >= self.cut_at:
                log.info("cutting a stream of %r: credentials revoked", self.caller.username)
                self.revoked.set()
                raise OSError("credentials revoked")
        await self._send(message)

    async def receive(self) -> Message:
        # After a cut the response's own disconnect handling takes over; a send has
        # already failed, which ends the stream and closes the generation.
        if self.revoked.is_set():
            return {"type": "http.disconnect"}
        return await self._receive()


def current_principal(request: Request) -> Principal:
    """The authenticated caller (set by ``AuthMiddleware``)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise AuthenticationError("authentication required")
    return principal


def admin_principal(caller: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller, who must be an admin (403 otherwise)."""
    caller.require_admin()
    return caller


def get_accounts(request: Request) -> AuthService:
    """The account services of this app."""
    accounts: AuthService = request.app.state.accounts
    return accounts


Caller = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]
Accounts = Annotated[AuthService, Depends(get_accounts)]
