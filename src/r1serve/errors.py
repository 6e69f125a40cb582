"""The one exception tree of r1serve.

Code raises these; it never returns error values. The HTTP layer maps each class to a status
code and OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``; the CLI prints
the message on one line and exits non-zero.

    R1ServeError                      (500, "server_error")
    ├── RequestError                  (400, "invalid_request_error")  bad input from a client
    │   ├── ContextLengthError        (400, code "context_length_exceeded")
    │   ├── NotFoundError             (404, "not_found_error")  unknown model, route, object
    │   ├── ConflictError             (409, "invalid_request_error")  clashes with current state
    │   ├── PayloadTooLargeError      (413, "invalid_request_error")
    │   ├── UnprocessableError        (422, "invalid_request_error")  schema validation failed
    │   └── UpstreamRequestError      (the upstream's 4xx) an upstream refused the input
    ├── AuthenticationError           (401, "authentication_error")
    │   └── AccessRevokedError        (code "access_revoked") a running stream's access ended
    ├── PermissionDeniedError         (403, "permission_error")
    ├── RateLimitError                (429, "rate_limit_error", Retry-After)
    ├── OverloadedError               (503, "server_overloaded", Retry-After)
    ├── EngineError                   (500, "server_error")  the model failed mid-request
    ├── UpstreamError                 (502, "upstream_error")  an upstream server failed
    ├── ShuttingDownError             (503, code "server_shutting_down") ends running streams
    ├── ConfigError                   (start-up only: bad model path, bad settings)
    │   ├── ModelNotFoundError        a --model path or name that does not exist
    │   └── UnsupportedModelError     no weights, or an architecture we cannot run
    └── DownloadError                 `r1serve pull` failed: hub down, bad listing, bad bytes
"""

from __future__ import annotations


class R1ServeError(Exception):
    """Base of every error r1serve raises on purpose."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class RequestError(R1ServeError):
    """The client sent something we will not run."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthError(RequestError):
    """Prompt (plus requested output) does not fit the model's context or the KV budget."""

    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class NotFoundError(RequestError):
    status_code = 404
    error_type = "not_found_error"


class ConflictError(RequestError):
    """The request clashes with the current state, e.g. a reply is already being generated."""

    status_code = 409


class PayloadTooLargeError(RequestError):
    status_code = 413


class UnprocessableError(RequestError):
    status_code = 422


class AuthenticationError(R1ServeError):
    status_code = 401
    error_type = "authentication_error"


class AccessRevokedError(AuthenticationError):
    """The key or session behind a running stream or reply was revoked, ended or changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="access_revoked")


class PermissionDeniedError(R1ServeError):
    status_code = 403
    error_type = "permission_error"


class RetryableError(R1ServeError):
    """An error the client should retry after ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: int = 1,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after = max(1, int(retry_after))


class RateLimitError(RetryableError):
    status_code = 429
    error_type = "rate_limit_error"


class OverloadedError(RetryableError):
    status_code = 503
    error_type = "server_overloaded"


class EngineError(R1ServeError):
    """The model failed while generating."""


class UpstreamError(R1ServeError):
    """An upstream OpenAI-compatible server failed, could not be reached, or stopped mid-reply.

    ``status_code`` is 502 unless the upstream's own answer says better (a 504 on a timeout).
    """

    status_code = 502
    error_type = "upstream_error"

    def __init__(self, message: str, *, status_code: int = 502, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status_code = status_code


class UpstreamRequestError(RequestError):
    """The upstream refused the request as bad input (its 4xx status and message, passed on)."""

    def __init__(self, message: str, *, status_code: int = 400, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status_code = status_code


class ShuttingDownError(R1ServeError):
    """The server is shutting down: what a running stream ends with, before its end marker."""

    status_code = 503

    def __init__(self, message: str = "the server is shutting down; retry shortly") -> None:
        super().__init__(message, code="server_shutting_down")


class ConfigError(R1ServeError):
    """Bad settings or model at start-up; the CLI prints the message and exits 2."""


class ModelNotFoundError(ConfigError):
    pass


class UnsupportedModelError(ConfigError):
    pass


class DownloadError(R1ServeError):
    """A model download failed or was refused; the CLI prints the reason and exits 1."""
