"""uvicorn's httptools protocol with a deadline for request headers (slowloris) and JSON errors.

uvicorn times out idle keep-alive connections but not a client that trickles its headers;
such a client would hold a connection forever. Here each request's headers must be complete
within ``HEADER_TIMEOUT_S`` of the connection opening (or of the previous response).

Requests the HTTP parser refuses never reach the app, so uvicorn would answer them in plain
text; here they get the OpenAI error shape and the security headers too. A URL is cut off at
``MAX_URL_BYTES`` (httptools cannot parse a longer one) with 414, before more of it is buffered.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from r1serve.errors import RequestError

HEADER_TIMEOUT_S = 10.0
MAX_URL_BYTES = 65535
_ERROR_HEADERS = (
    b"content-type: application/json\r\n"
    b"x-content-type-options: nosniff\r\n"
    b"content-security-policy: default-src 'none'; frame-ancestors 'none'\r\n"
    b"x-frame-options: DENY\r\n"
    b"referrer-policy: no-referrer\r\n"
    b"connection: close\r\n"
)


class _UrlTooLong(Exception):
    """Raised from the parser's URL callback; the parser then fails the request."""


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes connections whose request headers do not arrive in time."""

    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._url_too_long = False

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers took too long")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._url_too_long = True
            raise _UrlTooLong

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request: OpenAI's error JSON, then close."""
        if self._url_too_long:
            status = b"414 URI Too Long"
            error = RequestError(
                f"the URL is longer than {MAX_URL_BYTES} bytes", code="url_too_long"
            )
        else:
            status = b"400 Bad Request"
            error = RequestError("invalid HTTP request", code="invalid_http_request")
        body = json.dumps(error.to_dict()).encode()
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(_ERROR_HEADERS + b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
