"""Ollama's framing: NDJSON streams, and ``{"error": "…"}`` bodies on Ollama's paths.

``NDJSONResponse`` sends one JSON object a line; a client that disconnects or stops reading
closes the line iterator, and so the generation (as ``api.sse.event_stream`` does for SSE).
``OllamaErrorShape`` rewrites the app's OpenAI-shaped error bodies, wherever they come from
(auth, body limit, validation, the engine), for Ollama's paths only: ``/api/`` also holds
r1serve's own account and conversation routes, which keep their shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import anyio
from starlette.datastructures import MutableHeaders
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1serve.api.ollama_tools import ollama_calls
from r1serve.errors import R1ServeError
from r1serve.generation import Output, engine_failed

log = logging.getLogger("r1serve.api")

OLLAMA_PATHS = frozenset(
    {
        "/api/chat", "/api/generate", "/api/tags", "/api/show", "/api/ps", "/api/version",
        "/api/pull", "/api/delete", "/api/embed", "/api/embeddings", "/api/create",
        "/api/copy", "/api/push",
    }
)  # fmt: skip
NDJSON = "application/x-ndjson"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Line = dict[str, Any]


def line(obj: Line) -> bytes:
    return (_dumps(obj) + "\n").encode()


class NDJSONResponse(StreamingResponse):
    """A streamed ``application/x-ndjson`` response over an async iterator of objects."""

    def __init__(self, lines: AsyncIterator[Line], *, send_timeout_s: float) -> None:
        headers = {"Cache-Control": "no-cache"}
        super().__init__(lines, media_type=NDJSON, headers=headers)  # type: ignore[arg-type]
        self.lines = lines
        self.send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()  # cancelling the sender closes the lines

            group.start_soon(watch_disconnect)
            try:
                await self._send_all(send)
            except (OSError, TimeoutError) as exc:
                log.warning("%s: stream dropped (%s)", scope.get("path", ""), exc or "timeout")
            finally:
                group.cancel_scope.cancel()

    async def _send_all(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        async with aclosing(self.lines):  # type: ignore[type-var]
            async for obj in self.lines:
                body = {"type": "http.response.body", "body": line(obj), "more_body": True}
                with anyio.fail_after(self.send_timeout_s):
                    await send(body)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def error_line(exc: R1ServeError) -> Line:
    return {"error": exc.message}


async def reply_lines(
    outputs: AsyncIterator[Output],
    piece: Callable[[str, str, list[Line]], Line],
    last: Callable[[str | None, int, int], Line],
    *,
    show_thinking: bool,
    on_output: Callable[[], None],
) -> AsyncIterator[Line]:
    """Lines of one streamed reply: ``piece(content, thinking, tool_calls)`` per output with
    text or whole tool calls, then ``last(finish_reason, prompt_tokens, eval_tokens)``; a failure
    mid-stream is an error line."""
    async with aclosing(outputs):  # type: ignore[type-var]
        try:
            async for out in outputs:
                if out.finish_reason == "error":
                    yield error_line(engine_failed())
                    return
                thinking = out.reasoning if show_thinking else ""
                calls = ollama_calls(out.tool_calls) if out.tool_calls else []
                if out.content or thinking or calls:
                    on_output()
                    yield piece(out.content, thinking, calls)
                if out.finish_reason is not None:
                    usage = out.usage
                    prompt, completion = (
                        (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                    )
                    yield last(out.finish_reason, prompt, completion)
        except R1ServeError as exc:
            yield error_line(exc)


def _ollama_error(body: bytes) -> bytes | None:
    """``{"error": {"message": …}}`` as ``{"error": "…"}``; None when it is not that shape."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    message = data["error"].get("message")
    return _dumps({"error": str(message or "request failed")}).encode()


class OllamaErrorShape:
    """Error responses on Ollama's paths get Ollama's body; status and headers are kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in OLLAMA_PATHS:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshape(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # hold it until the whole (small) error body is here
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            body = _ollama_error(body) or body
            headers = MutableHeaders(raw=list(start["headers"]))
            headers["content-length"] = str(len(body))
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, reshape)
