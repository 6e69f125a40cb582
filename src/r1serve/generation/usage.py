"""Usage totals and whole choices, the one place outputs are added up.

``UsageTotal`` sums the usage of a response's choices as their outputs pass: every streamed
token (what a cancelled request still cost) and each choice's final ``Usage``, with a prompt
shared by ``n`` choices counted once. ``collect`` gathers whole choices for a non-streamed
response, and turns an engine failure into an ``EngineError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from r1serve.engine.protocol import TokenLogprob, Usage
from r1serve.generation.outputs import Output, OutputFinish, ToolCallDelta, engine_failed


class UsageTotal:
    """Usage over all choices of one response; ``prompt_of(index)`` names a choice's prompt."""

    def __init__(self, prompt_of: Callable[[int], int] = lambda index: 0) -> None:
        self._prompt_of = prompt_of
        self.prompt: dict[int, int] = {}
        self.completion = 0
        self.reasoning = 0
        self.streamed = 0  # tokens behind the outputs seen so far, finished or not
        self.finishes: list[str] = []

    def add(self, out: Output) -> None:
        self.streamed += out.tokens
        if out.finish_reason is not None:
            self.finishes.append(out.finish_reason)
        if out.usage is not None:
            self.add_usage(out.index, out.usage)

    def add_usage(self, index: int, usage: Usage) -> None:
        self.prompt[self._prompt_of(index)] = usage.prompt_tokens
        self.completion += usage.completion_tokens
        self.reasoning += usage.reasoning_tokens

    def as_usage(self) -> Usage:
        return Usage(sum(self.prompt.values()), self.completion, self.reasoning)

    def status(self) -> str:
        """One word for the request: the finish all choices share, else the worst one."""
        for worst in ("error", "abort", "timeout", "length"):
            if worst in self.finishes:
                return worst
        return "stop" if self.finishes else "cancelled"


@dataclass(slots=True)
class Choice:
    """One whole choice of a non-streamed response."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: OutputFinish | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    stop_reason: str | int | None = None

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def thinking(self) -> str:
        return "".join(self.reasoning)


@dataclass(slots=True)
class Completed:
    """Every choice of a response, and their usage."""

    choices: list[Choice]
    usage: Usage


async def collect(
    outputs: AsyncIterator[Output], choices: int, prompt_of: Callable[[int], int] = lambda i: 0
) -> Completed:
    """Whole choices from merged outputs; an engine failure raises ``EngineError``."""
    whole = [Choice() for _ in range(choices)]
    total = UsageTotal(prompt_of)
    async with contextlib.aclosing(outputs):  # type: ignore[type-var]
        async for out in outputs:
            c = whole[out.index]
            c.content.append(out.content)
            c.reasoning.append(out.reasoning)
            c.tool_calls.extend(out.tool_calls)
            c.logprobs.extend(out.logprobs)
            if out.finish_reason is not None:
                if out.finish_reason == "error":
                    raise engine_failed()
                c.finish_reason = out.finish_reason
                c.stop_reason = out.stop_reason
                c.usage = out.usage
            total.add(out)
    return Completed(whole, total.as_usage())
