"""Turn a stream of token ids into a stream of text, one step at a time.

Decoding each new token on its own goes wrong in two ways: byte-level BPE and SentencePiece
byte-fallback spread one character over several tokens (each piece alone decodes to U+FFFD),
and tokenizers render a token differently at the start of a text than after other tokens
(SentencePiece drops the leading space of the first token). So each step decodes a short window
of recent tokens together with the new ones and emits only the text past what the window had
already produced, holding back a trailing U+FFFD run until the character is complete.

The window always starts at a *clean boundary*: a token position where the decoded text ended
without a broken character. Starting inside a character would make byte-fallback tokenizers
render the whole run of byte tokens after it as U+FFFD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT_CHAR = "\ufffd"

# Tokens of already-emitted text kept in front of new tokens, so the new ones decode as they
# would in context (leading spaces, clean-up rules that look at the previous token).
_CONTEXT_TOKENS = 4
# A UTF-8 character has at most 4 bytes, so a valid one completes within 4 tokens; after this
# many tokens without a clean boundary the U+FFFD is real (invalid bytes) and is emitted.
_MAX_UNFINISHED_TOKENS = 8


class TextDecoder(Protocol):
    """The one tokenizer method the detokenizer needs (``protocol.Tokenizer`` has it)."""

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Streams text for generated token ids; never ends a chunk in half a character.

    Costs O(window) per ``feed``: the window is the context tokens plus the unfinished ones,
    whatever the length of the output so far.
    """

    def __init__(
        self,
        tokenizer: TextDecoder,
        prompt_token_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # Window of recent token ids; starts at a clean boundary.
        self._ids: list[int] = self._prompt_context(list(prompt_token_ids))
        # Positions in ``_ids`` where the decoded text ends cleanly; 0 always is one.
        self._boundaries: list[int] = [0]
        text = self._decode(self._ids)
        self._emitted = len(text) - _replacement_run(text)  # chars of decode(_ids) sent
        if self._emitted == len(text):
            self._boundaries.append(len(self._ids))

    def feed(self, token_ids: Sequence[int]) -> str:
        """Add generated token ids; return the text that is now complete."""
        if not token_ids:
            return ""
        self._ids.extend(token_ids)
        text = self._decode(self._ids)
        end = len(text) - _replacement_run(text)
        if end < len(text) and self._unfinished_tokens() > _MAX_UNFINISHED_TOKENS:
            self._find_boundary_in_tail()  # several new tokens: maybe only the last few are open
            if self._unfinished_tokens() > _MAX_UNFINISHED_TOKENS:
                end = len(text)  # invalid bytes, not a character in progress
        delta = text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        if end == len(text):
            self._boundaries.append(len(self._ids))
            self._slide_window()
        return delta

    def flush(self) -> str:
        """Return the held-back text at the end (invalid bytes show as U+FFFD)."""
        text = self._decode(self._ids)
        delta = text[self._emitted :]
        self._emitted = len(text)
        self._boundaries.append(len(self._ids))
        self._slide_window()
        return delta

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)

    def _unfinished_tokens(self) -> int:
        return len(self._ids) - self._boundaries[-1]

    def _find_boundary_in_tail(self) -> None:
        """Record the last clean boundary among the recent tokens, if there is one."""
        lowest = max(self._boundaries[-1] + 1, len(self._ids) - _MAX_UNFINISHED_TOKENS)
        for cut in range(len(self._ids) - 1, lowest - 1, -1):
            if not self._decode(self._ids[:cut]).endswith(REPLACEMENT_CHAR):
                self._boundaries.append(cut)
                return

    def _slide_window(self) -> None:
        """Drop tokens before the latest clean boundary that still leaves enough context."""
        end = len(self._ids)
        start = next((b for b in reversed(self._boundaries) if end - b >= _CONTEXT_TOKENS), 0)
        if start == 0:
            return
        self._ids = self._ids[start:]
        self._boundaries = [b - start for b in self._boundaries if b >= start]
        # Everything in the window was emitted; measure its text as decoded from the new start.
        self._emitted = len(self._decode(self._ids))

    def _prompt_context(self, prompt_ids: list[int]) -> list[int]:
        """The last few prompt tokens, starting where no character is split."""
        earliest = max(0, len(prompt_ids) - _CONTEXT_TOKENS - _MAX_UNFINISHED_TOKENS)
        for start in range(max(0, len(prompt_ids) - _CONTEXT_TOKENS), earliest - 1, -1):
            if not self._decode(prompt_ids[start:]).startswith(REPLACEMENT_CHAR):
                return prompt_ids[start:]
        return prompt_ids[max(0, len(prompt_ids) - _CONTEXT_TOKENS) :]


def _replacement_run(text: str) -> int:
    """Length of the run of U+FFFD at the end of ``text``: maybe a character in progress."""
    return len(text) - len(text.rstrip(REPLACEMENT_CHAR))
