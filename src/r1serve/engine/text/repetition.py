"""A guard that ends a reply stuck in a loop: the same span repeated many times in a row.

R1 distills (and small models) sometimes loop, writing one sentence or paragraph again and
again until max_tokens. ``find_repetition`` looks at the end of the output for a span of
``1..MAX_SPAN`` characters repeated back to back at least ``required_repeats(len(span))`` times:
``max(MIN_REPEATS, ceil(MIN_CHARS / len(span)))``. So a 100-character paragraph must appear 4
times in a row, a 20-character phrase 20 times, one character 400 times; ordinary text (lists,
tables, code) does not repeat one span that long. ``RepetitionGuard`` applies it to a stream,
checking after every ``CHECK_EVERY`` new characters and keeping only the tail it needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_SPAN = 512  # longest repeated span looked for, in characters
MIN_REPEATS = 4  # a long span must still repeat at least this many times
MIN_CHARS = 400  # a short span must repeat until the loop covers this many characters
CHECK_EVERY = 32  # characters of new output between two checks


def required_repeats(span: int) -> int:
    """How many back-to-back copies of a span of ``span`` characters count as a loop."""
    return max(MIN_REPEATS, math.ceil(MIN_CHARS / span))


_WINDOW = max(required_repeats(span) * span for span in range(1, MAX_SPAN + 1))


@dataclass(frozen=True, slots=True)
class Repetition:
    span: str
    repeats: int  # whole copies at the end of the text (at least the required number)


def find_repetition(text: str) -> Repetition | None:
    """The shortest span that ends ``text`` repeated into a loop, or None."""
    for length in range(1, min(MAX_SPAN, len(text) // MIN_REPEATS) + 1):
        window = required_repeats(length) * length
        if window > len(text):
            continue
        tail = text[-window:]
        if tail[length:] == tail[:-length]:  # periodic with period ``length``
            span = tail[-length:]
            repeats = window // length
            while text.endswith(span * (repeats + 1)):
                repeats += 1
            return Repetition(span, repeats)
    return None


class RepetitionGuard:
    """Feed output text as it streams; ``feed`` turns True once the output loops."""

    def __init__(self) -> None:
        self._tail = ""
        self._unchecked = 0
        self.found: Repetition | None = None

    def feed(self, text: str) -> bool:
        if self.found is not None:
            return True
        self._tail = (self._tail + text)[-_WINDOW:]
        self._unchecked += len(text)
        if self._unchecked >= CHECK_EVERY:
            self._unchecked = 0
            self.found = find_repetition(self._tail)
        return self.found is not None
