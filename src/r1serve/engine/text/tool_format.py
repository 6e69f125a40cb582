"""Tool calls in prompts: what a chat template knows about tools, and how calls are written.

Three call forms are known (``ToolFormat``):

- ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Qwen2.5, Hermes,
  and r1serve's generic form for templates without tool support);
- ``deepseek``: DeepSeek's ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`` + a fenced JSON
  block (the R1 distill templates render earlier calls this way);
- ``llama3``: the whole answer is ``{"name": ..., "parameters": {...}}`` (Llama 3.1+).

A template that uses the ``tools`` variable describes the tools itself. One that does not gets
r1serve's generic tool prompt (``generic_tool_prompt``) as a system message, in the form its
earlier calls are rendered in. Templates that render ``tool_calls`` get the messages as OpenAI
sends them; others get earlier calls as text in the same form and tool results as user turns.
See docs/tools.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
import jinja2.meta

ToolFormat = Literal["hermes", "deepseek", "llama3"]

DS_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
DS_CALLS_END = "<｜tool▁calls▁end｜>"
DS_CALL_BEGIN = "<｜tool▁call▁begin｜>"
DS_CALL_END = "<｜tool▁call▁end｜>"
DS_SEP = "<｜tool▁sep｜>"
HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"


@dataclass(frozen=True, slots=True)
class ToolSupport:
    """What one chat template does with tools."""

    describes_tools: bool  # renders the ``tools`` variable
    renders_calls: bool  # renders assistant ``tool_calls`` and ``tool`` messages
    arguments_as_object: bool  # expects ``function.arguments`` as a mapping (``| tojson``)
    format: ToolFormat

    @classmethod
    def of_template(cls, source: str) -> ToolSupport:
        """Inspect a template's source."""
        try:
            names = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(source))
        except jinja2.TemplateSyntaxError:
            names = set()
        describes = "tools" in names
        squeezed = source.replace(" ", "")
        if DS_CALL_BEGIN in source:
            form: ToolFormat = "deepseek"
        elif HERMES_OPEN in source or not describes:
            form = "hermes"
        elif '"parameters"' in source or "ipython" in source:
            form = "llama3"
        else:
            form = "hermes"
        return cls(
            describes_tools=describes,
            renders_calls="tool_calls" in source,
            arguments_as_object="arguments|tojson" in squeezed
            or "arguments|items" in squeezed
            or ".arguments.items()" in squeezed,
            format=form,
        )


def function_of(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``function`` part of an OpenAI tool."""
    function = tool.get("function")
    return function if isinstance(function, Mapping) else {}


def write_call(form: ToolFormat, name: str, arguments: str) -> str:
    """One call as the model writes it in ``form`` (``arguments``: JSON text)."""
    if form == "deepseek":
        return f"{DS_CALL_BEGIN}function{DS_SEP}{name}\n```json\n{arguments}\n```{DS_CALL_END}"
    if form == "llama3":
        return f'{{"name": {json.dumps(name)}, "parameters": {arguments}}}'
    call = f'{{"name": {json.dumps(name)}, "arguments": {arguments}}}'
    return f"{HERMES_OPEN}\n{call}\n{HERMES_CLOSE}"


def write_calls(form: ToolFormat, calls: Sequence[tuple[str, str]]) -> str:
    """Several calls in one turn."""
    if form == "deepseek":
        inner = "\n".join(write_call(form, n, a) for n, a in calls)
        return f"{DS_CALLS_BEGIN}{inner}{DS_CALLS_END}"
    sep = "; " if form == "llama3" else "\n"
    return sep.join(write_call(form, n, a) for n, a in calls)


_EXAMPLE_ARGS = '{"argument name": "value"}'


def generic_tool_prompt(tools: Sequence[Mapping[str, Any]], form: ToolFormat) -> str:
    """The system text that describes tools to a model whose template cannot (docs/tools.md)."""
    lines = [
        "# Tools",
        "",
        "You may call one or more functions to help with the user's request. "
        "The functions are described by these JSON signatures:",
        "<tools>",
        *(json.dumps(tool, ensure_ascii=False) for tool in tools),
        "</tools>",
        "",
        "To call a function, answer with exactly this form, one block per call, "
        "and nothing else in the block:",
        write_call(form, "function name", _EXAMPLE_ARGS),
        "",
        "A function's result comes back in a later message. "
        "If no function is needed, answer normally.",
    ]
    return "\n".join(lines)


def prepare_messages(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    support: ToolSupport,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and template variables for rendering a conversation with tools.

    Earlier calls and tool results are passed as the template expects them, or written out as
    text when it cannot render them; tools the template cannot describe become a system prompt.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls") or []
        if message.get("role") == "assistant" and calls:
            out.append(_assistant_with_calls(message, calls, support))
        elif message.get("role") == "tool" and not support.renders_calls:
            result = message.get("content") or ""
            out.append({"role": "user", "content": f"<tool_response>\n{result}\n</tool_response>"})
        else:
            out.append(dict(message))
    variables: dict[str, Any] = {}
    if tools:
        if support.describes_tools:
            variables["tools"] = [dict(tool) for tool in tools]
        else:
            prompt = generic_tool_prompt(tools, support.format)
            if out and out[0].get("role") == "system":
                first = out[0].get("content") or ""
                out[0] = {**out[0], "content": f"{first}\n\n{prompt}" if first else prompt}
            else:
                out.insert(0, {"role": "system", "content": prompt})
    return out, variables


def _assistant_with_calls(
    message: Mapping[str, Any], calls: Sequence[Mapping[str, Any]], support: ToolSupport
) -> dict[str, Any]:
    pairs = [
        (str(function_of(c).get("name", "")), str(function_of(c).get("arguments") or "{}"))
        for c in calls
    ]
    content = message.get("content") or None
    if not support.renders_calls:
        text = write_calls(support.format, pairs)
        return {"role": "assistant", "content": f"{content}\n{text}" if content else text}
    rendered = []
    for call, (name, arguments) in zip(calls, pairs, strict=True):
        args: Any = arguments
        if support.arguments_as_object:
            try:
                args = json.loads(arguments)
            except json.JSONDecodeError:
                args = {}
        rendered.append(
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
        )
    return {"role": "assistant", "content": content, "tool_calls": rendered}


_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
LEADING_SPACE = r"/[ \t\n]{0,4}/"


def _lark_json(schema: Mapping[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": _JSON_STYLE}, ensure_ascii=False)


def _lark_text(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    params = function_of(tool).get("parameters")
    return dict(params) if isinstance(params, Mapping) and params else {"type": "object"}


MARKERS = (
    HERMES_OPEN,
    HERMES_CLOSE,
    DS_CALLS_BEGIN,
    DS_CALLS_END,
    DS_CALL_BEGIN,
    DS_CALL_END,
    DS_SEP,
)


def call_grammar(
    tools: Sequence[Mapping[str, Any]], form: ToolFormat, *, parallel: bool, lead: bool
) -> str:
    """A Lark grammar (llguidance dialect) whose every sentence is one or more calls to ``tools``.

    ``lead``: allow a little whitespace first (after R1's ``</think>``). Each marker is a
    literal of its own, so a compiler can also accept it as one special token (``MARKERS``).
    """
    rules: list[str] = []
    alternatives: list[str] = []
    for i, tool in enumerate(tools):
        name = str(function_of(tool).get("name", ""))
        params = _parameters(tool)
        if form == "deepseek":
            parts = [DS_CALL_BEGIN, "function", DS_SEP, f"{name}\n```json\n"]
            head = " ".join(_lark_text(part) for part in parts)
            tail = f'"\\n```" {_lark_text(DS_CALL_END)}'
            rules.append(f"call{i}: {head} {_lark_json(params)} {tail}")
        else:
            key = "parameters" if form == "llama3" else "arguments"
            schema = {
                "type": "object",
                "properties": {"name": {"const": name}, key: params},
                "required": ["name", key],
                "additionalProperties": False,
            }
            rules.append(f"call{i}: {_lark_json(schema)}")
        alternatives.append(f"call{i}")
    if form == "deepseek":
        many = f'{_lark_text(DS_CALLS_BEGIN)} call ("\\n" call)* {_lark_text(DS_CALLS_END)}'
        single = f"{_lark_text(DS_CALLS_BEGIN)} call {_lark_text(DS_CALLS_END)}"
    elif form == "llama3":
        many, single = 'call ("; " call)*', "call"
    else:
        block = f'{_lark_text(HERMES_OPEN)} "\\n" call "\\n" {_lark_text(HERMES_CLOSE)}'
        rules.append(f"block: {block}")
        many, single = 'block ("\\n" block)*', "block"
    body = many if parallel else single
    start = f"start: {LEADING_SPACE} {body}" if lead else f"start: {body}"
    return "\n".join([start, f"call: {' | '.join(alternatives)}", *rules]) + "\n"
