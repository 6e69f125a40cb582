"""The OpenAI wire format of an upstream server: request bodies out, stream chunks in.

Pure functions, tested against recorded transcripts (``tests/fixtures/upstream/``). Reasoning
arrives in one of three shapes and leaves as R1 text (``<think>…</think>`` then the answer), so
r1serve's own splitter and every API downstream treat it like a local model's output:

- ``delta.reasoning`` (vLLM since its 2026 rename, Ollama's ``/v1``, r1serve),
- ``delta.reasoning_content`` (older vLLM, SGLang, llama.cpp's server, DeepSeek's API),
- raw ``<think>`` tags inside ``delta.content`` (a server without a reasoning parser).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from r1serve.engine.protocol import FinishReason, GenerationRequest, SamplingParams, Usage
from r1serve.engine.text.reasoning import CLOSE_TAG, OPEN_TAG
from r1serve.engine.text.tool_format import HERMES_CLOSE, HERMES_OPEN
from r1serve.errors import RequestError, UpstreamError, UpstreamRequestError

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    "timeout": "timeout",
    "error": "error",
}


def sampling_fields(params: SamplingParams) -> dict[str, Any]:
    """OpenAI sampling fields, plus the vLLM/SGLang/llama.cpp extensions only where not off."""
    body: dict[str, Any] = {"temperature": params.temperature}
    optional: list[tuple[str, Any, bool]] = [
        ("top_p", params.top_p, params.top_p != 1.0),
        ("top_k", params.top_k, params.top_k > 0),
        ("min_p", params.min_p, params.min_p > 0.0),
        ("repetition_penalty", params.repetition_penalty, params.repetition_penalty != 1.0),
        # llama.cpp's server reads only its own name for it (vLLM and SGLang ignore this one)
        ("repeat_penalty", params.repetition_penalty, params.repetition_penalty != 1.0),
        ("presence_penalty", params.presence_penalty, params.presence_penalty != 0.0),
        ("frequency_penalty", params.frequency_penalty, params.frequency_penalty != 0.0),
        ("seed", params.seed, params.seed is not None),
        ("max_tokens", params.max_tokens, params.max_tokens is not None),
        ("stop", list(params.stop), bool(params.stop)),
        ("stop_token_ids", list(params.stop_token_ids), bool(params.stop_token_ids)),
        ("ignore_eos", True, params.ignore_eos),
        ("logit_bias", {str(k): v for k, v in params.logit_bias.items()}, bool(params.logit_bias)),
    ]
    body.update({name: value for name, value, wanted in optional if wanted})
    if params.logprobs is not None:
        raise RequestError(
            "logprobs are not passed to an upstream server yet", param="top_logprobs"
        )
    constraint = params.constraint
    if constraint is not None:
        if constraint.kind == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif constraint.kind == "json_schema":
            schema = json.loads(constraint.source)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema},
            }
        elif constraint.tool_choice is None:  # a tool_choice goes as such (request_body)
            raise RequestError(
                f"{constraint.kind} constraints are not passed to an upstream server",
                param="response_format",
            )
    return body


def request_body(model: str, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
    """The path (``chat/completions`` or ``completions``) and the streaming body of a request."""
    origin = request.origin
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_fields(request.params),
    }
    if origin is not None and origin.messages:
        body["messages"] = [dict(m) for m in origin.messages]
        if origin.tools:
            body["tools"] = [dict(t) for t in origin.tools]
            choice = request.params.constraint and request.params.constraint.tool_choice
            if choice == "required":
                body["tool_choice"] = "required"
            elif choice:
                body["tool_choice"] = {"type": "function", "function": {"name": choice}}
        return "chat/completions", body
    if origin is not None and origin.text is not None:
        return "completions", {**body, "prompt": origin.text}
    raise RequestError("an upstream engine needs the prompt's messages or text", param="messages")


@dataclass(frozen=True, slots=True)
class ToolPiece:
    """One streamed piece of a tool call: the first of a call has its name, the rest more of
    its arguments' JSON text."""

    index: int
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one streamed chunk of the upstream says (all parts may be empty)."""

    reasoning: str = ""
    content: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolPiece, ...] = ()  # pieces of the upstream's tool calls


def parse_chunk(data: str) -> Chunk:
    """One ``data:`` payload of a chat or text completion stream; UpstreamError for an error."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise UpstreamError(f"upstream sent a chunk that is not JSON: {data[:200]!r}") from exc
    if not isinstance(obj, dict):
        raise UpstreamError(f"upstream sent a chunk that is not an object: {data[:200]!r}")
    if "error" in obj:
        raise UpstreamError(f"upstream failed mid-reply: {error_message(obj)}")
    usage = _usage(obj.get("usage"))
    choices = obj.get("choices") or []
    if not choices:
        return Chunk(usage=usage)
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
        content = delta.get("content") or ""
        tools = _tool_pieces(delta.get("tool_calls"))
    else:  # a text completion
        reasoning, content, tools = "", choice.get("text") or "", ()
    reason = choice.get("finish_reason")
    finish = None if reason is None else _FINISH.get(str(reason), "stop")
    return Chunk(str(reasoning), str(content), finish, usage, tools)


def _tool_pieces(raw: object) -> tuple[ToolPiece, ...]:
    if not isinstance(raw, list):
        return ()
    pieces = []
    for position, call in enumerate(raw):
        if not isinstance(call, dict):
            continue
        raw_function = call.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        index = call.get("index", position)
        args = function.get("arguments")
        if isinstance(args, dict):  # Ollama-style whole objects
            args = json.dumps(args, ensure_ascii=False)
        pieces.append(
            ToolPiece(
                index if isinstance(index, int) else position,
                str(function.get("name") or ""),
                str(args or ""),
            )
        )
    return tuple(pieces)


class ToolCalls:
    """The upstream's streamed tool calls, gathered and written out, once the reply ends, in
    the ``<tool_call>`` JSON form r1serve's tool parser reads (its ``hermes`` form)."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}

    def feed(self, pieces: Sequence[ToolPiece]) -> None:
        for piece in pieces:
            name, args = self._calls.setdefault(piece.index, ["", ""])
            self._calls[piece.index] = [name + piece.name, args + piece.arguments]

    def text(self) -> str:
        """Each call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; arguments
        that are not JSON are written as they came, so the parser leaves that call as text."""
        out = []
        for _, (name, args) in sorted(self._calls.items()):
            try:
                value: object = json.loads(args or "{}")
            except ValueError:
                body = f'{{"name": {json.dumps(name)}, "arguments": {args}}}'
            else:
                body = json.dumps({"name": name, "arguments": value}, ensure_ascii=False)
            out.append(f"{HERMES_OPEN}\n{body}\n{HERMES_CLOSE}")
        self._calls.clear()
        return "\n".join(out)


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else 0
    return Usage(
        int(raw.get("prompt_tokens") or 0),
        int(raw.get("completion_tokens") or 0),
        int(reasoning or 0),
    )


class ThinkText:
    """Turns reasoning fields and content into one R1 text: ``<think>`` reasoning ``</think>``."""

    def __init__(self) -> None:
        self._open = False
        self.reasoning_chunks = 0  # chunks that carried reasoning (a count when usage has none)

    def feed(self, chunk: Chunk) -> str:
        parts = []
        if chunk.reasoning:
            self.reasoning_chunks += 1
            if not self._open:
                parts.append(OPEN_TAG + "\n")
                self._open = True
            parts.append(chunk.reasoning)
        if chunk.content:
            parts.append(self._close())
            parts.append(chunk.content)
        if chunk.finish_reason is not None:
            parts.append(self._close())
        return "".join(parts)

    def _close(self) -> str:
        if not self._open:
            return ""
        self._open = False
        return "\n" + CLOSE_TAG + "\n\n"


def error_message(body: object) -> str:
    """The message of an OpenAI-shaped (or FastAPI, or plain) error body."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail")
            if message:
                return str(message)[:2000]
        if isinstance(err, str):
            return err[:2000]
        if "detail" in body:
            return str(body["detail"])[:2000]
    return str(body)[:2000]


def status_error(status: int, body: object, replica: str) -> UpstreamError | RequestError:
    """An upstream's error status as r1serve's error: 4xx pass on, 5xx become 502/503."""
    message = error_message(body)
    if 400 <= status < 500 and status not in (401, 403, 407, 408, 429):
        return UpstreamRequestError(message, status_code=status)
    if status in (401, 403, 407):
        # The upstream refused r1serve's key: a configuration fault, not the client's.
        return UpstreamError(f"{replica} refused r1serve's API key ({status}): {message}")
    if status in (408, 504):
        return UpstreamError(f"{replica} timed out: {message}", status_code=504)
    if status in (429, 503):
        return UpstreamError(f"{replica} is busy: {message}", status_code=503)
    return UpstreamError(f"{replica} failed ({status}): {message}")
