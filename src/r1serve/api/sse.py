"""Server-Sent Events framing for the streaming endpoints.

Each function turns merged engine outputs into the ``data:`` payloads one endpoint sends;
``event_stream`` wraps them in a response that cancels the generation when the client
disconnects or stops reading.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from r1serve.api.logprobs import TokenText, chat_logprobs, completion_logprobs
from r1serve.engine.protocol import TokenLogprob, Usage
from r1serve.errors import R1ServeError
from r1serve.generation import REPETITION, Output, ToolCallDelta, UsageTotal, engine_failed

log = logging.getLogger("r1serve.api")

DONE = "[DONE]"
_DONE = f"data: {DONE}\n\n".encode()
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _EventStream(EventSourceResponse):
    """An SSE response that drops a client who stopped reading with a log line, not a traceback.

    Its send timeout is one timer per stream that cancels a send running past the limit, not
    sse_starlette's anyio cancel scope around every chunk: that scope took a sixth of the event
    loop's time per streamed token (issue #9, measured with py-spy). A send cut by the timer
    fails with sse_starlette's ``SendTimeoutError``, as one cut by its scope does, and
    everything after that (closing the events, ending the response) is sse_starlette's own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sends: dict[asyncio.Task[Any], float] = {}  # task sending -> when it began
        self._cut: set[asyncio.Task[Any]] = set()  # sends the timer cancelled
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.send_timeout:
            self._arm(self.send_timeout)
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.warning(
                "%s %s: the client stopped reading for %.1f s; stream dropped",
                scope.get("method", ""),
                scope.get("path", ""),
                self.send_timeout or 0.0,
            )
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _arm(self, limit: float) -> None:
        """Check the running sends again in a quarter of the timeout (at most in a second)."""
        self._timer = asyncio.get_running_loop().call_later(min(1.0, limit / 4), self._check, limit)

    def _check(self, limit: float) -> None:
        now = asyncio.get_running_loop().time()
        for task, since in list(self._sends.items()):
            if now - since >= limit and task not in self._cut:
                self._cut.add(task)
                task.cancel()
        self._arm(limit)

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """sse_starlette's per-send hook (3.7): one send, cut by the timer past the timeout."""
        task = asyncio.current_task()
        assert task is not None
        self._sends[task] = task.get_loop().time()
        try:
            await send(message)
        except asyncio.CancelledError:
            self._send_interrupted = True
            if task in self._cut and task.uncancel() == 0:  # the timer's cancel alone
                raise SendTimeoutError() from None
            raise
        except BaseException:
            self._send_interrupted = True
            raise
        finally:
            del self._sends[task]
        if task in self._cut:  # the send swallowed the timer's cancel
            task.uncancel()
            self._send_interrupted = True
            raise SendTimeoutError()


def event_stream(
    events: AsyncIterator[bytes | str | ServerSentEvent],
    *,
    send_timeout_s: float,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    """An SSE response; a gone or stalled client closes ``events`` (and so the generation)."""
    return _EventStream(events, sep="\n", ping=15, send_timeout=send_timeout_s, headers=headers)


def frame(payload: str) -> bytes:
    """One ``data:`` event, framed here rather than by sse_starlette's general encoder.

    ``payload`` is JSON from ``json`` (which escapes every CR and LF) or ``[DONE]``, so it is
    one line, exactly as ``ServerSentEvent(payload).encode()`` would give it.
    """
    return f"data: {payload}\n\n".encode()


def _usage_dict(usage: Usage) -> dict[str, object]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _error_event(exc: R1ServeError) -> str:
    return _dumps(exc.to_dict())


def _choice(
    head: str,
    index: int,
    key: str,
    value: object,
    logprobs: object,
    finish: str | None,
    extra: dict[str, object],
) -> str:
    """One chunk with one choice: ``{"index", key, "logprobs", "finish_reason", **extra}``,
    encoded piece by piece (the same bytes as encoding the whole dict, with less work per
    token)."""
    more = f",{_dumps(extra)[1:-1]}" if extra else ""
    return (
        f'{head},"choices":[{{"index":{index},"{key}":{_dumps(value)},'
        f'"logprobs":{_dumps(logprobs)},"finish_reason":{_dumps(finish)}{more}}}]}}'
    )


def _stop_reason(out: Output) -> dict[str, object]:
    return {"stop_reason": REPETITION} if out.stop_reason == REPETITION else {}


async def chat_events(
    outputs: AsyncIterator[Output],
    *,
    request_id: str,
    model: str,
    created: int,
    choices: int,
    include_usage: bool,
    token_text: TokenText | None = None,
) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` events: role first, deltas, finish, usage, [DONE].

    With ``token_text`` (logprobs asked for) each chunk carries the log probabilities of the
    tokens behind it; tokens whose text is still held back come with a later chunk.
    """
    head = _dumps({"id": request_id, "object": "chat.completion.chunk", "created": created,
                   "model": model})[:-1]  # fmt: skip
    pending: dict[int, list[TokenLogprob]] = {}

    def chunk(
        index: int, delta: dict[str, object], finish: str | None = None, **extra: object
    ) -> bytes:
        logprobs = None
        if token_text is not None and (pending.get(index) or finish is not None):
            logprobs = chat_logprobs(pending.pop(index, []), token_text)
        return frame(_choice(head, index, "delta", delta, logprobs, finish, extra))

    total = UsageTotal()
    async with aclosing(outputs):  # type: ignore[type-var]
        for index in range(choices):
            yield chunk(index, {"role": "assistant", "content": ""})
        try:
            async for out in outputs:
                pending.setdefault(out.index, []).extend(out.logprobs)
                delta: dict[str, object] = {}
                if out.reasoning:
                    delta["reasoning_content"] = out.reasoning
                    delta["reasoning"] = out.reasoning
                if out.content:
                    delta["content"] = out.content
                if out.finish_reason == "error":
                    yield frame(_error_event(engine_failed()))
                    yield _DONE
                    return
                if delta:
                    yield chunk(out.index, delta)
                for call in out.tool_calls:
                    yield chunk(out.index, {"tool_calls": [tool_call_delta(call)]})
                if out.finish_reason is not None:
                    yield chunk(out.index, {}, out.finish_reason, **_stop_reason(out))
                total.add(out)
        except R1ServeError as exc:
            yield frame(_error_event(exc))
            yield _DONE
            return
    if include_usage:
        yield frame(f'{head},"choices":[],"usage":{_dumps(_usage_dict(total.as_usage()))}}}')
    yield _DONE


async def completion_events(
    outputs: AsyncIterator[Output],
    *,
    request_id: str,
    model: str,
    created: int,
    n: int,
    include_usage: bool,
    echo_prompts: list[str] | None,
    token_text: TokenText | None = None,
) -> AsyncIterator[bytes]:
    """``text_completion`` events: text deltas, finish, usage, [DONE]."""
    head = _dumps({"id": request_id, "object": "text_completion", "created": created,
                   "model": model})[:-1]  # fmt: skip
    offsets: dict[int, int] = {}

    def chunk(
        index: int, text: str, finish: str | None = None, logprobs: object = None, **extra: object
    ) -> bytes:
        return frame(_choice(head, index, "text", text, logprobs, finish, extra))

    total = UsageTotal(lambda index: index // n)
    echoed: set[int] = set()
    async with aclosing(outputs):  # type: ignore[type-var]
        try:
            async for out in outputs:
                if out.finish_reason == "error":
                    yield frame(_error_event(engine_failed()))
                    yield _DONE
                    return
                text = out.content
                if echo_prompts is not None and out.index not in echoed:
                    echoed.add(out.index)
                    text = echo_prompts[out.index // n] + text
                logprobs = None
                if token_text is not None and out.logprobs:
                    start = offsets.get(out.index, len(text) - len(out.content))
                    logprobs = completion_logprobs(out.logprobs, token_text, start)
                    offsets[out.index] = start + sum(len(t) for t in logprobs["tokens"])
                if text or logprobs:
                    yield chunk(out.index, text, logprobs=logprobs)
                if out.finish_reason is not None:
                    yield chunk(out.index, "", out.finish_reason, **_stop_reason(out))
                total.add(out)
        except R1ServeError as exc:
            yield frame(_error_event(exc))
            yield _DONE
            return
    if include_usage:
        yield frame(f'{head},"choices":[],"usage":{_dumps(_usage_dict(total.as_usage()))}}}')
    yield _DONE


async def simple_events(outputs: AsyncIterator[Output]) -> AsyncIterator[str | ServerSentEvent]:
    """The script-style stream: answer text as plain events, reasoning as ``event: reasoning``."""
    async with aclosing(outputs):  # type: ignore[type-var]
        try:
            async for out in outputs:
                if out.finish_reason == "error":
                    yield ServerSentEvent(data=_error_event(engine_failed()), event="error")
                    break
                if out.reasoning:
                    yield ServerSentEvent(data=out.reasoning, event="reasoning")
                if out.content:
                    yield ServerSentEvent(data=out.content)
        except R1ServeError as exc:
            yield ServerSentEvent(data=_error_event(exc), event="error")
    yield DONE


def tool_call_delta(call: ToolCallDelta) -> dict[str, object]:
    """One tool-call piece in OpenAI's streamed shape: id, type and name come first, once."""
    if call.id is None:
        return {"index": call.index, "function": {"arguments": call.arguments}}
    function = {"name": call.name, "arguments": call.arguments}
    return {"index": call.index, "id": call.id, "type": "function", "function": function}
