"""Parse tool calls out of a model's streamed answer text.

``ToolCallParser`` takes the answer (reasoning already split off) as it streams and returns
what is safe to send: content text, and complete calls. A call is held back until it is
complete and checked (a known function, arguments that are a JSON object), so a client never
sees a broken call; one that fails the check is given back as content, markers and all. Text
that could still be the start of a call marker is held back, like a stop string.

Both the ``hermes`` and ``deepseek`` forms are always recognized (R1 distills write either);
the ``llama3`` form, a bare JSON answer, only when the template asked for it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from r1serve.engine.text.tool_format import (
    DS_CALL_BEGIN,
    DS_CALL_END,
    DS_CALLS_BEGIN,
    DS_CALLS_END,
    DS_SEP,
    HERMES_CLOSE,
    HERMES_OPEN,
    PYTHON_TAG,
    ToolFormat,
)

_OPENERS = (HERMES_OPEN, DS_CALL_BEGIN, DS_CALLS_BEGIN, DS_CALLS_END)
_CLOSER = {HERMES_OPEN: HERMES_CLOSE, DS_CALL_BEGIN: DS_CALL_END}


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object's text


@dataclass(slots=True)
class ToolEvents:
    """What one ``feed`` released, in order: content text and complete calls."""

    items: list[str | ParsedCall] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(item for item in self.items if isinstance(item, str))

    @property
    def calls(self) -> list[ParsedCall]:
        return [item for item in self.items if isinstance(item, ParsedCall)]


class ToolCallParser:
    """Splits streamed answer text into content and tool calls."""

    def __init__(self, names: Collection[str], form: ToolFormat) -> None:
        self._names = frozenset(names)
        self._form = form
        self._pending = ""  # text not yet released
        self._opener: str | None = None  # inside a call that began with this marker
        self._bare_json: bool | None = None if form == "llama3" else False
        self.calls = 0  # calls released so far
        self._after_call = False
        self._gap = ""

    def feed(self, text: str) -> ToolEvents:
        self._pending += text
        events = ToolEvents()
        if self._bare_json is None:
            head = self._pending.lstrip()
            if not head:
                return events
            if head.startswith(("{", PYTHON_TAG)) or PYTHON_TAG.startswith(head):
                self._bare_json = True
            else:
                self._bare_json = False
        if self._bare_json:
            return events  # a bare JSON call is judged only when the answer is complete
        self._scan(events)
        return events

    def finish(self) -> ToolEvents:
        """Everything still held back, at the end of the answer."""
        events = ToolEvents()
        if self._bare_json:
            calls = _bare_calls(self._pending.strip().removeprefix(PYTHON_TAG), self._names)
            if calls is None:
                self._text(events, self._pending)
            else:
                self._add(events, calls)
            self._pending = ""
            return events
        self._scan(events)
        if self._opener is not None:  # the answer ended inside a call: judge what is there
            self._close_call(events, self._pending, ended=False)
        else:
            self._text(events, self._pending)
        self._pending = ""
        return events

    def _scan(self, events: ToolEvents) -> None:
        while True:
            if self._opener is not None:
                closer = _CLOSER[self._opener]
                end = self._pending.find(closer)
                if end == -1:
                    return
                body, self._pending = self._pending[:end], self._pending[end + len(closer) :]
                self._close_call(events, body, ended=True)
                continue
            found = [(self._pending.find(m), m) for m in _OPENERS if m in self._pending]
            if not found:
                # Hold back a marker's possible start, and whitespace (dropped next to a call).
                partial = _partial_marker(self._pending)
                head = self._pending[: len(self._pending) - partial]
                keep = partial + len(head) - len(head.rstrip())
                self._text(events, self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
                return
            at, marker = min(found)
            before = self._pending[:at].rstrip()
            self._text(events, before)
            gap = self._pending[len(before) : at]
            self._pending = self._pending[at + len(marker) :]
            if marker in _CLOSER:
                self._opener = marker
                self._gap = gap  # given back if the call turns out not to be one
            else:  # the wrapper markers of DeepSeek's form just vanish
                self._pending = gap + self._pending

    def _close_call(self, events: ToolEvents, body: str, *, ended: bool) -> None:
        opener = self._opener
        assert opener is not None
        self._opener = None
        parse = _hermes_call if opener == HERMES_OPEN else _deepseek_call
        call = parse(body)
        if call is not None and call.name in self._names:
            self._add(events, [call])
        else:
            self._text(events, self._gap + opener + body + (_CLOSER[opener] if ended else ""))

    def _add(self, events: ToolEvents, calls: list[ParsedCall]) -> None:
        events.items.extend(calls)
        self.calls += len(calls)
        self._after_call = True

    def _text(self, events: ToolEvents, text: str) -> None:
        """Release content; whitespace right before or after a call is dropped."""
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        if text:
            events.items.append(text)


def _partial_marker(text: str) -> int:
    """Length of the longest tail of ``text`` that begins a marker."""
    best = 0
    for marker in _OPENERS:
        for size in range(min(len(marker) - 1, len(text)), best, -1):
            if marker.startswith(text[-size:]):
                best = size
                break
    return best


def _object_text(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def _named_call(value: Any, names: Collection[str] | None = None) -> ParsedCall | None:
    """A call from ``{"name": ..., "arguments"|"parameters": {...}}``."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get("arguments", value.get("parameters", {}))
    text = _object_text(args)
    if text is None or (names is not None and value["name"] not in names):
        return None
    return ParsedCall(value["name"], text)


def _hermes_call(body: str) -> ParsedCall | None:
    try:
        return _named_call(json.loads(body))
    except json.JSONDecodeError:
        return None


def _deepseek_call(body: str) -> ParsedCall | None:
    """``function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```"""
    kind, sep, rest = body.partition(DS_SEP)
    if not sep or kind.strip() not in ("function", ""):
        return None
    name, _, args = rest.partition("\n")
    args = args.strip()
    if args.startswith("```"):
        args = args.removeprefix("```json").removeprefix("```").rstrip()
        args = args.removesuffix("```")
    text = _object_text(args.strip() or "{}")
    return None if text is None or not name.strip() else ParsedCall(name.strip(), text)


def _bare_calls(text: str, names: Collection[str]) -> list[ParsedCall] | None:
    """Llama 3's form: one JSON call, or several separated by ``;``; None if it is not that."""
    decoder = json.JSONDecoder()
    calls: list[ParsedCall] = []
    at = 0
    while at < len(text):
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return None
        call = _named_call(value, names)
        if call is None:
            return None
        calls.append(call)
        at = end
        while at < len(text) and text[at] in " \t\n;":
            at += 1
    return calls or None


def split_pieces(text: str, size: int = 16) -> list[str]:
    """Arguments cut into stream pieces (at least one, possibly empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
