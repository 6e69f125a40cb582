"""Stop-string matching over streamed text.

The matcher holds back any tail of the text that could still become a stop string, so what it
returns is always safe to send. The output is the text cut at the *first occurrence* (lowest
start) of any stop string, whatever the chunking: when one stop string completes while a longer
one that started earlier could still complete (one stop contains another, e.g. ``"abc"`` and
``"b"``), the matcher waits for the text that decides between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StopResult:
    """What one ``feed`` released: ``text`` is safe to emit; ``matched`` is the stop string."""

    text: str
    stopped: bool = False
    matched: str | None = None


class StopMatcher:
    """Cuts streamed text at the first stop string; the stop string itself is never emitted.

    Work per ``feed`` is bounded by the new text plus the longest stop string (times the number
    of stop strings): the matcher rescans only the held-back tail, never the emitted text.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        if isinstance(stops, str):
            raise TypeError("stops must be a sequence of strings, not one string")
        if any(not stop for stop in stops):
            raise ValueError("stop strings must not be empty")
        # Shortest first: of two stop strings starting at one position the shorter completes
        # first in a stream, so a one-shot scan must report it too.
        self._stops = tuple(sorted(set(stops), key=len))
        self._pending = ""
        self._stopped = False
        self._matched: str | None = None

    @property
    def stopped(self) -> bool:
        """True once a stop string has completed (also when ``flush`` found it)."""
        return self._stopped

    @property
    def matched(self) -> str | None:
        """The stop string that ended the text, if any."""
        return self._matched

    def feed(self, text: str) -> StopResult:
        """Add streamed text; return what may be emitted now."""
        if self._stopped:
            return StopResult("", True, self._matched)
        buffer = self._pending + text
        match_start, matched = self._first_match(buffer)
        live_start = self._first_live_prefix(buffer)
        if matched is not None and live_start >= match_start:
            return self._stop(buffer[:match_start], matched)
        # No match, or an earlier-starting stop string may still complete: emit up to the
        # earliest place a stop string could begin.
        cut = live_start if matched is None else min(live_start, match_start)
        self._pending = buffer[cut:]
        return StopResult(buffer[:cut])

    def flush(self) -> str:
        """Release the held-back text at the end of the stream."""
        if self._stopped:
            return ""
        buffer, self._pending = self._pending, ""
        match_start, matched = self._first_match(buffer)
        if matched is not None:
            return self._stop(buffer[:match_start], matched).text
        return buffer

    def _stop(self, text: str, matched: str) -> StopResult:
        self._stopped, self._matched, self._pending = True, matched, ""
        return StopResult(text, True, matched)

    def _first_match(self, buffer: str) -> tuple[int, str | None]:
        """Lowest start of a complete stop string in ``buffer`` (shortest on ties)."""
        best_start, best = len(buffer), None
        for stop in self._stops:
            start = buffer.find(stop, 0, best_start + len(stop) - 1)
            if start != -1 and start < best_start:
                best_start, best = start, stop
        return best_start, best

    def _first_live_prefix(self, buffer: str) -> int:
        """Lowest position from which the rest of ``buffer`` is a proper prefix of a stop."""
        end = len(buffer)
        best = end
        for stop in self._stops:
            # Only the last len(stop) - 1 characters can start an unfinished copy of ``stop``.
            position = buffer.find(stop[0], max(0, end - len(stop) + 1), best)
            while position != -1:
                if stop.startswith(buffer[position:]):
                    best = position
                    break
                position = buffer.find(stop[0], position + 1, best)
        return best
