"""What a generation hands its outputs to for usage records: passed in, never looked up.

The HTTP layer's ``api.metering.MeteredRequest`` is one: it knows who asked through which
endpoint, records one usage event when the outputs end (done, failed or cancelled), and ends
them once the caller's access does. A generation without a meter (the CLI, tests) records none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from r1serve.generation.outputs import Output


class Meter(Protocol):
    """Watches one request's merged outputs."""

    def watch(
        self, outputs: AsyncIterator[Output], *, prompt_lens: Sequence[int], n: int, model: str
    ) -> AsyncIterator[Output]:
        """``outputs`` passed through; usage is recorded however they end. ``prompt_lens``:
        r1serve's count of each prompt, whose ``n`` choices have indexes ``p * n + i``."""
        ...
