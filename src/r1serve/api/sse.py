"""Server-Sent Events framing for the streaming endpoints.

Each function turns merged engine outputs into the ``data:`` payloads one endpoint sends;
``event_stream`` wraps them in a response that cancels the generation when the client
disconnects or stops reading.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from r1serve.api.logprobs import TokenText, chat_logprobs, completion_logprobs
from r1serve.engine.protocol import TokenLogprob, Usage
from r1serve.errors import R1ServeError
from r1serve.generation import REPETITION, Output, ToolCallDelta, UsageTotal, engine_failed

log = logging.getLogger("r1serve.api")

DONE = "[DONE]"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _EventStream(EventSourceResponse):
    """An SSE response that drops a client who stopped reading with a log line, not a traceback."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.warning(
                "%s %s: the client stopped reading for %.1f s; stream dropped",
                scope.get("method", ""),
                scope.get("path", ""),
                self.send_timeout or 0.0,
            )


def event_stream(
    events: AsyncIterator[str | ServerSentEvent],
    *,
    send_timeout_s: float,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    """An SSE response; a gone or stalled client closes ``events`` (and so the generation)."""
    return _EventStream(events, sep="\n", ping=15, send_timeout=send_timeout_s, headers=headers)


def _usage_dict(usage: Usage) -> dict[str, object]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _error_event(exc: R1ServeError) -> str:
    return _dumps(exc.to_dict())


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
) -> AsyncIterator[str]:
    """``chat.completion.chunk`` payloads: role first, deltas, finish, usage, [DONE].

    With ``token_text`` (logprobs asked for) each chunk carries the log probabilities of the
    tokens behind it; tokens whose text is still held back come with a later chunk.
    """
    head = _dumps({"id": request_id, "object": "chat.completion.chunk", "created": created,
                   "model": model})[:-1]  # fmt: skip
    pending: dict[int, list[TokenLogprob]] = {}

    def chunk(
        index: int, delta: dict[str, object], finish: str | None = None, **extra: object
    ) -> str:
        logprobs = None
        if token_text is not None and (pending.get(index) or finish is not None):
            logprobs = chat_logprobs(pending.pop(index, []), token_text)
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return f'{head},"choices":[{_dumps({**choice, **extra})}]}}'

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
                    yield _error_event(engine_failed())
                    yield DONE
                    return
                if delta:
                    yield chunk(out.index, delta)
                for call in out.tool_calls:
                    yield chunk(out.index, {"tool_calls": [tool_call_delta(call)]})
                if out.finish_reason is not None:
                    yield chunk(out.index, {}, out.finish_reason, **_stop_reason(out))
                total.add(out)
        except R1ServeError as exc:
            yield _error_event(exc)
            yield DONE
            return
    if include_usage:
        yield f'{head},"choices":[],"usage":{_dumps(_usage_dict(total.as_usage()))}}}'
    yield DONE


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
) -> AsyncIterator[str]:
    """``text_completion`` payloads: text deltas, finish, usage, [DONE]."""
    head = _dumps({"id": request_id, "object": "text_completion", "created": created,
                   "model": model})[:-1]  # fmt: skip
    offsets: dict[int, int] = {}

    def chunk(
        index: int, text: str, finish: str | None = None, logprobs: object = None, **extra: object
    ) -> str:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return f'{head},"choices":[{_dumps({**choice, **extra})}]}}'

    total = UsageTotal(lambda index: index // n)
    echoed: set[int] = set()
    async with aclosing(outputs):  # type: ignore[type-var]
        try:
            async for out in outputs:
                if out.finish_reason == "error":
                    yield _error_event(engine_failed())
                    yield DONE
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
            yield _error_event(exc)
            yield DONE
            return
    if include_usage:
        yield f'{head},"choices":[],"usage":{_dumps(_usage_dict(total.as_usage()))}}}'
    yield DONE


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
