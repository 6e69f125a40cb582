"""One place that turns every failure into OpenAI's error JSON, never a stack trace."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from r1serve.errors import (
    AuthenticationError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    R1ServeError,
    RequestError,
    RetryableError,
)

log = logging.getLogger("r1serve.api")


def error_response(exc: R1ServeError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON response for an r1serve error, with Retry-After where it applies."""
    extra = dict(headers or {})
    if isinstance(exc, RetryableError):
        extra["Retry-After"] = str(exc.retry_after)
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=extra or None)


@contextlib.contextmanager
def route_params(**names: str) -> Iterator[None]:
    """Errors raised inside name this route's parameters, e.g. ``prompt`` for ``messages``.

    The engine and the chat template name the chat API's parameters; other routes call them
    differently.
    """
    try:
        yield
    except R1ServeError as exc:
        if exc.param in names:
            exc.param = names[exc.param]
        raise


def internal_error_response() -> JSONResponse:
    """The 500 for an exception nothing else handled: no detail beyond "see the log"."""
    return error_response(R1ServeError("internal server error; see the server log"))


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic names union members (e.g. "str", "list[TextPart]"); they only add noise
    parts = [p for p in parts if not any(c in p for c in "[]") and p not in ("str", "int")]
    return ".".join(parts)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A readable message and the first offending parameter for pydantic errors."""
    if not errors:
        return "invalid request", None
    lines = []
    for err in errors[:5]:
        where = _loc(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            msg = f"invalid JSON: {err.get('ctx', {}).get('error', 'cannot parse')}"
            where = ""
        lines.append(f"{where}: {msg}" if where else msg)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    first = _loc(tuple(errors[0].get("loc", ()))).split(".")[0] or None
    return "; ".join(lines) + more, first


_HTTP_ERRORS: dict[int, type[R1ServeError]] = {
    400: RequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
}


def install_error_handlers(app: FastAPI) -> None:
    """Map the r1serve error tree, validation errors and stray exceptions to JSON."""

    @app.exception_handler(R1ServeError)
    async def _r1serve(_: Request, exc: R1ServeError) -> JSONResponse:
        if isinstance(exc, RetryableError):
            log.info("refused (%d): %s", exc.status_code, exc.message)
        elif exc.status_code >= 500:
            log.error("server error: %s", exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return error_response(RequestError(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = _HTTP_ERRORS.get(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the request body is not valid JSON in UTF-8 (or is nested too deeply)"
        if exc.status_code == 405:
            return JSONResponse(
                RequestError(detail, code="method_not_allowed").to_dict(),
                status_code=405,
                headers=exc.headers,
            )
        err = cls(detail) if cls else R1ServeError(detail)
        err.status_code = exc.status_code
        return error_response(err, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return internal_error_response()
