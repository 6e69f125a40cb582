"""Sliding-window limits approximated from two fixed windows (previous and current).

The estimate weighs the previous window by how much of it still overlaps the sliding window; it
lets a database keep two small counters per subject instead of every event's time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class SlidingWindow:
    """At most ``limit`` events per ``window_s`` seconds."""

    limit: int
    window_s: int

    def starts(self, now: float) -> tuple[int, int]:
        """Start times (epoch seconds) of the previous and the current fixed window."""
        current = int(now // self.window_s) * self.window_s
        return current - self.window_s, current

    def estimate(self, previous: int, current: int, now: float) -> float:
        """Events in the sliding window ending now."""
        elapsed = (now - self.starts(now)[1]) / self.window_s
        return previous * (1.0 - elapsed) + current

    def allows(self, previous: int, current: int, now: float) -> bool:
        """Whether one more event fits, given the counts before it."""
        return self.estimate(previous, current, now) + 1 <= self.limit + _EPSILON

    def wait_s(self, previous: int, current: int, now: float) -> float:
        """Seconds until one more event fits, if nothing else happens meanwhile."""
        if self.allows(previous, current, now):
            return 0.0
        window = self.window_s
        elapsed = (now - self.starts(now)[1]) / window
        remaining = window * (1.0 - elapsed)
        if current + 1 <= self.limit and previous > 0:
            # Within this window the previous one's weight shrinks until the event fits.
            wait = window * (1.0 - elapsed - (self.limit - current - 1) / previous)
            if wait < remaining:
                return max(wait, 0.0)
        # In the next window the current count becomes the shrinking previous one.
        later = window * (1.0 - (self.limit - 1) / current) if current > 0 else 0.0
        return remaining + max(later, 0.0)

    def retry_after(self, previous: int, current: int, now: float) -> int:
        """``wait_s`` rounded up to whole seconds, at least 1 (for ``Retry-After``)."""
        return max(1, math.ceil(self.wait_s(previous, current, now) - _EPSILON))
