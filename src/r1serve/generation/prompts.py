"""Prompt preparation off the event loop: cheap checks first, then a bounded pool of threads.

Rendering a chat template and tokenizing take time proportional to the prompt (a 4 MB prompt
takes over a second), and on the event loop they stall every stream and ``/health``. So each
prompt goes through ``PromptWorkers.prepare``: its size in characters is checked (400 at once
above ``max_prompt_chars``), then whether the engine would take one more request (503 at once
when it is full, counting the prompts already being prepared), and only then is it rendered
and tokenized in one of a few worker threads. Its size in tokens is checked by the engine's
``submit`` as before.

A generating request is admitted once at the door, before its body is read (``api/body.py``),
and from then on it ``hold``s its place: the requests of a burst that arrive behind it see it
counted at once, so the excess gets its 503 without waiting for the earlier ones to reach their
prompt. The hold ends when its prompt is prepared (the engine counts it from ``submit`` on) or
when the request ends, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import anyio

from r1serve.engine.protocol import Engine
from r1serve.errors import ContextLengthError

T = TypeVar("T")
CHARS_PER_TOKEN_LIMIT = 32  # no real prompt averages more characters per token than this


class _Hold:
    """One request's place, taken at the door, given back once (``release`` is idempotent)."""

    __slots__ = ("held", "workers")

    def __init__(self, workers: PromptWorkers) -> None:
        self.workers = workers
        self.held = True
        workers.held += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.workers.held -= 1


_HOLD: ContextVar[_Hold | None] = ContextVar("r1serve_prompt_hold", default=None)


class PromptWorkers:
    """A few threads that render and tokenize prompts, behind size and admission checks."""

    def __init__(self, engine: Engine, *, threads: int = 2, max_chars: int | None = None) -> None:
        self.engine = engine
        self.threads = threads
        self._max_chars = max_chars
        self._limiter: anyio.CapacityLimiter | None = None  # needs a running event loop
        self.preparing = 0  # prompts checked and not yet handed back (waiting or running)
        self.held = 0  # requests admitted at the door whose prompt is not prepared yet

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

    @property
    def pending(self) -> int:
        """Requests on their way to the engine: admitted at the door, or being prepared."""
        return self.preparing + self.held

    def admit_at_door(self) -> None:
        """OverloadedError when one more request would be refused now (before its body)."""
        self.engine.check_admission(self.pending)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count the current request as on its way until its prompt is prepared or it ends."""
        hold = _Hold(self)
        token = _HOLD.set(hold)
        try:
            yield
        finally:
            _HOLD.reset(token)
            hold.release()

    async def prepare(self, chars: int, build: Callable[[], T], *, param: str = "messages") -> T:
        """``build()`` in a worker thread, after the size and admission checks."""
        hold = _HOLD.get()
        own = hold if hold is not None and hold.workers is self and hold.held else None
        self.check_size(chars, param)
        self.engine.check_admission(self.pending - (1 if own is not None else 0))
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        self.preparing += 1
        if own is not None:
            own.release()  # counted in ``preparing`` from here on
        try:
            return await anyio.to_thread.run_sync(build, limiter=self._limiter)
        finally:
            self.preparing -= 1
