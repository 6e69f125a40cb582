"""Tool calls and structured output for chat requests: prompt inputs, constraints, output parsing.

``chat_messages`` and ``offered_tools`` give the engine what its chat template renders;
``chat_constraint`` turns ``response_format`` and a ``required``/named ``tool_choice`` into an
engine ``Constraint`` (enforced by constrained decoding, not by hoping); ``with_tool_calls``
parses each choice's answer into content and OpenAI tool calls. docs/tools.md has the rules.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from r1serve.api.schemas import ChatCompletionRequest, ChatMessage
from r1serve.api.tool_schemas import (
    FunctionCallOut,
    NamedToolChoice,
    ToolCallOut,
    ToolChoice,
    ToolDefinition,
)
from r1serve.engine.protocol import Constraint, Prompt
from r1serve.engine.text.chat_template import THINK_CLOSE
from r1serve.engine.text.tool_format import ToolFormat, call_grammar
from r1serve.engine.text.tool_parser import ParsedCall, ToolCallParser, split_pieces
from r1serve.errors import RequestError
from r1serve.generation.outputs import Output, ToolCallDelta  # ToolCallDelta: re-exported

_FORMATS: tuple[ToolFormat, ...] = ("hermes", "deepseek", "llama3")


class ToolRequest(Protocol):
    """What offers tools: a chat request, or a stored conversation's ``ToolOptions``."""

    @property
    def tools(self) -> Sequence[ToolDefinition] | None: ...

    @property
    def tool_choice(self) -> ToolChoice | None: ...

    @property
    def parallel_tool_calls(self) -> bool | None: ...


@dataclass(frozen=True, slots=True)
class ToolSetup:
    """How to read tool calls out of one request's answers."""

    names: frozenset[str]
    form: ToolFormat
    parallel: bool


def message_dict(message: ChatMessage) -> dict[str, Any]:
    """One message as a chat template sees it (OpenAI's field names)."""
    item: dict[str, Any] = {"role": message.role, "content": message.text()}
    if message.tool_calls:
        item["content"] = message.text() or None
        item["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": call.function.arguments_text(),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        item["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        item["name"] = message.name
    return item


def chat_messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    return [message_dict(m) for m in req.messages]


def offered_tools(req: ToolRequest) -> list[dict[str, Any]] | None:
    """The tool definitions the model is told about (none under ``tool_choice: none``)."""
    if not req.tools or req.tool_choice == "none":
        return None
    return [tool.model_dump(exclude_none=True) for tool in req.tools]


def tool_setup(req: ToolRequest, prompt: Prompt) -> ToolSetup | None:
    """What to parse, if this request offered tools."""
    return setup_for(offered_tools(req), prompt, parallel=req.parallel_tool_calls is not False)


def setup_for(
    tools: Sequence[dict[str, Any]] | None, prompt: Prompt, *, parallel: bool = True
) -> ToolSetup | None:
    """What to parse out of answers to ``prompt``, rendered with these tool definitions."""
    if not tools:
        return None
    form = prompt.tool_format if prompt.tool_format in _FORMATS else "hermes"
    return ToolSetup(
        names=frozenset(t["function"]["name"] for t in tools), form=form, parallel=parallel
    )


def chat_constraint(req: ChatCompletionRequest, prompt: Prompt) -> Constraint | None:
    """The decoding constraint of a chat request, if it has one."""
    fmt = req.response_format
    forced = tool_constraint(req, prompt)
    if forced is not None:
        if fmt is not None and fmt.type != "text":
            raise RequestError(
                "a required or named tool_choice cannot be combined with a JSON response_format",
                param="response_format",
            )
        return forced
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_constraint(None, prompt)
    assert fmt.json_schema is not None
    return json_constraint(json.dumps(fmt.json_schema.schema_), prompt)


def json_constraint(schema: str | None, prompt: Prompt) -> Constraint:
    """Any JSON object (``schema`` None) or JSON valid under the schema's JSON text; with an
    R1 prompt that opened the reasoning, from the answer on."""
    after = THINK_CLOSE if prompt.opens_reasoning else None
    if schema is None:
        return Constraint("json_object", "", after=after)
    return Constraint("json_schema", schema, after=after)


def tool_constraint(req: ToolRequest, prompt: Prompt) -> Constraint | None:
    """The grammar of a ``required`` or named ``tool_choice``; None when calling is optional."""
    forced = _forced_tools(req)
    if forced is None:
        return None
    after = THINK_CLOSE if prompt.opens_reasoning else None
    setup = tool_setup(req, prompt)
    assert setup is not None
    grammar = call_grammar(forced, setup.form, parallel=setup.parallel, lead=after is not None)
    choice = req.tool_choice
    named = choice.function.name if isinstance(choice, NamedToolChoice) else "required"
    return Constraint("lark", grammar, after=after, tool_choice=named)


def _forced_tools(req: ToolRequest) -> list[dict[str, Any]] | None:
    """The tools one of which must be called, or None when calling is optional."""
    tools = offered_tools(req)
    choice = req.tool_choice
    if not tools or choice in (None, "auto", "none"):
        return None
    if isinstance(choice, NamedToolChoice):
        return [t for t in tools if t["function"]["name"] == choice.function.name]
    return tools


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


async def with_tool_calls(
    outputs: AsyncIterator[Output], setup: ToolSetup, choices: int
) -> AsyncIterator[Output]:
    """Each choice's answer parsed into content and tool-call pieces; finish ``tool_calls``."""
    parsers = [ToolCallParser(setup.names, setup.form) for _ in range(choices)]
    async with contextlib.aclosing(outputs):  # type: ignore[type-var]
        async for out in outputs:
            parser = parsers[out.index]
            events = parser.feed(out.content)
            items = list(events.items)
            if out.finish_reason is not None:
                items += parser.finish().items
            content, calls = _pieces(items, parser, setup)
            finish = out.finish_reason
            if finish == "stop" and parser.calls:
                finish = "tool_calls"
            yield replace(out, content=content, tool_calls=calls, finish_reason=finish)


def _pieces(
    items: Sequence[str | ParsedCall], parser: ToolCallParser, setup: ToolSetup
) -> tuple[str, tuple[ToolCallDelta, ...]]:
    """Content text and call pieces of one output (calls past the first dropped if not parallel)."""
    content: list[str] = []
    calls: list[ToolCallDelta] = []
    index = parser.calls - sum(1 for item in items if not isinstance(item, str))
    for item in items:
        if isinstance(item, str):
            content.append(item)
            continue
        if setup.parallel or index == 0:
            pieces = split_pieces(item.arguments)
            calls.append(ToolCallDelta(index, "", new_call_id(), item.name))
            calls.extend(ToolCallDelta(index, piece) for piece in pieces)
        index += 1
    return "".join(content), tuple(calls)


def whole_calls(pieces: Sequence[ToolCallDelta]) -> list[ToolCallOut]:
    """The calls of one choice, their pieces joined (for a non-streamed response)."""
    calls: dict[int, ToolCallOut] = {}
    for piece in pieces:
        if piece.id is not None:
            calls[piece.index] = ToolCallOut(
                id=piece.id, function=FunctionCallOut(name=piece.name or "", arguments="")
            )
        else:
            calls[piece.index].function.arguments += piece.arguments
    return [calls[i] for i in sorted(calls)]
