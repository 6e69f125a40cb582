"""Ollama's ``tools``, ``message.tool_calls`` and ``format`` over the OpenAI API's machinery.

Requests become what ``api.tools`` gives the chat template (OpenAI-shaped messages and tool
definitions); the engine's parsed calls go back in Ollama's shape, each call whole:
``{"function": {"name": …, "arguments": {…}}}`` with the arguments an object, not JSON text.
Ollama has no call ids: earlier calls get ids here, and a ``tool`` message (``tool_name``)
answers the oldest unanswered call of that name, so templates that pair them can.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from r1serve.api.ollama_schemas import ChatRequest, Message
from r1serve.api.tools import ToolCallDelta, json_constraint, whole_calls
from r1serve.engine.protocol import Constraint, Prompt


def chat_messages(body: ChatRequest) -> list[dict[str, Any]]:
    """Messages for the chat template; earlier replies' ``thinking`` never reaches the prompt."""
    unanswered: list[tuple[str, str]] = []  # (id, name) of calls without a result yet
    out = []
    for index, message in enumerate(body.messages):
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["content"] = message.content or None
            item["tool_calls"] = _calls_in(message, index, unanswered)
        if message.role == "tool":
            call_id = _answered(unanswered, message.tool_name)
            if call_id is not None:
                item["tool_call_id"] = call_id
            if message.tool_name:
                item["name"] = message.tool_name
        out.append(item)
    return out


def _calls_in(
    message: Message, index: int, unanswered: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    calls = []
    for n, call in enumerate(message.tool_calls or ()):
        call_id = f"call_{index}_{n}"
        unanswered.append((call_id, call.function.name))
        arguments = json.dumps(call.function.arguments, ensure_ascii=False)
        calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": arguments},
            }
        )
    return calls


def _answered(unanswered: list[tuple[str, str]], name: str | None) -> str | None:
    """The id of the call a tool result answers (the oldest of its name, else the oldest)."""
    for at, (call_id, called) in enumerate(unanswered):
        if name is None or called == name:
            del unanswered[at]
            return call_id
    return unanswered.pop(0)[0] if unanswered else None


def offered_tools(body: ChatRequest) -> list[dict[str, Any]] | None:
    """The tool definitions the model is told about (Ollama's are OpenAI's shape)."""
    if not body.tools:
        return None
    return [tool.model_dump(exclude_none=True) for tool in body.tools]


def format_constraint(fmt: str | dict[str, Any] | None, prompt: Prompt) -> Constraint | None:
    """``format``: ``"json"`` is any JSON object, an object is a JSON schema; ``""``: none."""
    if not fmt:
        return None
    return json_constraint(None if fmt == "json" else json.dumps(fmt), prompt)


def ollama_calls(pieces: Sequence[ToolCallDelta]) -> list[dict[str, Any]]:
    """Whole calls in Ollama's shape from one output's pieces (each call's pieces come together)."""
    calls = []
    for call in whole_calls(pieces):
        arguments = json.loads(call.function.arguments or "{}")  # the parser checked: an object
        calls.append({"function": {"name": call.function.name, "arguments": arguments}})
    return calls
