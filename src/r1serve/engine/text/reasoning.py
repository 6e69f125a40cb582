"""Split DeepSeek-R1 style output into reasoning (``<think>…</think>``) and answer content.

Rules, the same for the streaming ``ReasoningSplitter`` and the one-shot ``split_reasoning``:

- ``starts_in_reasoning`` (the chat template ended the prompt with ``<think>\\n``): everything up
  to the first ``</think>`` is reasoning, the rest is content.
- Otherwise, output that opens with ``<think>`` (after optional whitespace) is reasoning up to
  the first ``</think>``; any other output is all content, tags included.
- A reasoning block that is never closed takes the whole output; content is then empty.
- Reasoning loses its leading and trailing whitespace, content its leading whitespace;
  whitespace inside either is kept exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """New reasoning text and new answer text from one step."""

    reasoning: str = ""
    content: str = ""


def split_reasoning(
    text: str,
    starts_in_reasoning: bool = False,
    open_tag: str = OPEN_TAG,
    close_tag: str = CLOSE_TAG,
) -> tuple[str, str]:
    """Split a whole output into ``(reasoning, content)``."""
    _check_tags(open_tag, close_tag)
    if starts_in_reasoning:
        body = text
    else:
        opened = text.lstrip()
        if not opened.startswith(open_tag):
            return "", opened
        body = opened[len(open_tag) :]
    end = body.find(close_tag)
    if end == -1:
        return body.strip(), ""
    return body[:end].strip(), body[end + len(close_tag) :].lstrip()


class _State(enum.Enum):
    OPENING = enum.auto()  # before the first non-space text: is it ``<think>``?
    REASONING = enum.auto()  # inside the reasoning block
    CONTENT_START = enum.auto()  # answer, still dropping leading whitespace
    CONTENT = enum.auto()  # answer, passed through verbatim


class ReasoningSplitter:
    """Streaming ``split_reasoning``: tags may arrive split at any character.

    Held back between calls: a partial tag (shorter than the tag) and the whitespace at the end
    of the reasoning so far, which is dropped if ``</think>`` or the end of output follows. Work
    per ``feed`` is proportional to the new text plus the tag length.
    """

    def __init__(
        self,
        starts_in_reasoning: bool,
        open_tag: str = OPEN_TAG,
        close_tag: str = CLOSE_TAG,
    ) -> None:
        _check_tags(open_tag, close_tag)
        self._open_tag = open_tag
        self._close_tag = close_tag
        self._state = _State.REASONING if starts_in_reasoning else _State.OPENING
        self._partial_tag = ""  # a proper prefix of the tag the current state is looking for
        self._reasoning_started = False  # leading whitespace of reasoning already skipped
        self._held_whitespace: list[str] = []  # trailing whitespace of the reasoning so far

    def feed(self, text: str) -> ReasoningDelta:
        """Add output text; return the reasoning and content that are now certain."""
        reasoning: list[str] = []
        content: list[str] = []
        rest = self._partial_tag + text
        self._partial_tag = ""
        while rest:
            if self._state is _State.OPENING:
                rest = self._feed_opening(rest)
            elif self._state is _State.REASONING:
                rest = self._feed_reasoning(rest, reasoning)
            elif self._state is _State.CONTENT_START:
                rest = rest.lstrip()
                if rest:
                    self._state = _State.CONTENT
            else:
                content.append(rest)
                rest = ""
        return ReasoningDelta("".join(reasoning), "".join(content))

    def finish(self) -> ReasoningDelta:
        """End of output: release held-back text (trailing reasoning whitespace is dropped)."""
        partial, self._partial_tag = self._partial_tag, ""
        held, self._held_whitespace = self._held_whitespace, []
        if self._state is _State.OPENING:
            # Output that stopped part-way into ``<think>`` did not open a reasoning block.
            self._state = _State.CONTENT
            return ReasoningDelta(content=partial)
        if self._state is _State.REASONING:
            # An unfinished ``</think>`` is reasoning text; the whitespace before it is inner.
            tail = partial.rstrip()
            return ReasoningDelta(reasoning="".join(held) + tail if tail else "")
        return ReasoningDelta()

    def _feed_opening(self, text: str) -> str:
        """Decide whether the output opens a reasoning block; return the unconsumed text."""
        text = text.lstrip()  # whitespace before ``<think>`` or before content is dropped
        if not text:
            return ""
        if text.startswith(self._open_tag):
            self._state = _State.REASONING
            return text[len(self._open_tag) :]
        if self._open_tag.startswith(text):
            self._partial_tag = text
            return ""
        self._state = _State.CONTENT
        return text

    def _feed_reasoning(self, text: str, out: list[str]) -> str:
        """Consume reasoning text up to ``</think>``; return the text after the tag."""
        end = text.find(self._close_tag)
        if end != -1:
            self._emit_reasoning(text[:end], out)
            self._held_whitespace.clear()  # trailing whitespace of the reasoning
            self._state = _State.CONTENT_START
            return text[end + len(self._close_tag) :]
        keep = _partial_suffix_length(text, self._close_tag)
        self._emit_reasoning(text[: len(text) - keep], out)
        self._partial_tag = text[len(text) - keep :]
        return ""

    def _emit_reasoning(self, text: str, out: list[str]) -> None:
        """Emit reasoning text, holding its trailing whitespace until more text follows."""
        if not self._reasoning_started:
            text = text.lstrip()
            if not text:
                return
            self._reasoning_started = True
        body = text.rstrip()
        if body:
            out.extend(self._held_whitespace)
            out.append(body)
            self._held_whitespace.clear()
        trailing = text[len(body) :]
        if trailing:
            self._held_whitespace.append(trailing)


def _partial_suffix_length(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


def _check_tags(open_tag: str, close_tag: str) -> None:
    for name, tag in (("open_tag", open_tag), ("close_tag", close_tag)):
        # Whitespace at a tag's edge would make "drop surrounding whitespace" ambiguous.
        if not tag or tag[0].isspace() or tag[-1].isspace():
            raise ValueError(f"{name} must be non-empty without leading or trailing whitespace")
