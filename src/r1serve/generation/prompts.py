"""Prompt preparation off the event loop: cheap checks first, then a bounded pool of threads.

Rendering a chat template and tokenizing take time proportional to the prompt (a 4 MB prompt
takes over a second), and on the event loop they stall every stream and ``/health``. So each
prompt goes through ``PromptWorkers.prepare``: its size in characters is checked (400 at once
above ``max_prompt_chars``), then whether the engine would take one more request (503 at once
when it is full, counting the prompts already being prepared), and only then is it rendered
and tokenized in one of a few worker threads. Its size in tokens is checked by the engine's
``submit`` as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio

from r1serve.engine.protocol import Engine
from r1serve.errors import ContextLengthError

T = TypeVar("T")
CHARS_PER_TOKEN_LIMIT = 32  # no real prompt averages more characters per token than this


class PromptWorkers:
    """A few threads that render and tokenize prompts, behind size and admission checks."""

    def __init__(self, engine: Engine, *, threads: int = 2, max_chars: int | None = None) -> None:
        self.engine = engine
        self.threads = threads
        self._max_chars = max_chars
        self._limiter: anyio.CapacityLimiter | None = None  # needs a running event loop
        self.preparing = 0  # prompts checked and not yet handed back (waiting or running)

    @property
    def max_chars(self) -> int:
        """The longest prompt, in characters, worth tokenizing."""
        return self._max_chars or CHARS_PER_TOKEN_LIMIT * self.engine.context_length

    def check_size(self, chars: int, param: str) -> None:
        """400 for a prompt that cannot fit the context whatever its tokens."""
        if chars > self.max_chars:
            raise ContextLengthError(
                f"the prompt has {chars} characters; this server takes at most "
                f"{self.max_chars} (max_prompt_chars; the context is "
                f"{self.engine.context_length} tokens)",
                param=param,
            )

    async def prepare(self, chars: int, build: Callable[[], T], *, param: str = "messages") -> T:
        """``build()`` in a worker thread, after the size and admission checks."""
        self.check_size(chars, param)
        self.engine.check_admission(self.preparing)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        self.preparing += 1
        try:
            return await anyio.to_thread.run_sync(build, limiter=self._limiter)
        finally:
            self.preparing -= 1
