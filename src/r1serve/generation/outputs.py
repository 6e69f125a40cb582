"""Engine deltas as outputs: one or ``n`` choices merged, each split into reasoning and answer.

``merge`` reads every choice's engine stream at once and yields ``Output`` pieces as they come;
each choice has its own splitter (``ReasoningSplitter``, or ``RawOutput`` where no split is
wanted) and, when asked for, a ``RepetitionGuard`` that ends a reply stuck in a loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from r1serve.engine.protocol import Delta, DeltaStream, FinishReason, TokenLogprob, Usage
from r1serve.engine.text.reasoning import ReasoningDelta
from r1serve.engine.text.repetition import RepetitionGuard
from r1serve.errors import EngineError

REPETITION = "repetition"  # stop_reason of a reply the repetition guard ended
ENGINE_FAILED = "the model failed while generating; see the server log"
OutputFinish = FinishReason | Literal["tool_calls"]


def engine_failed() -> EngineError:
    """The error every wire format reports for a choice that finished with ``"error"``."""
    return EngineError(ENGINE_FAILED)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of one tool call: the first has its id and name, the others more arguments."""

    index: int  # the call's position in its choice
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """One piece of one choice's output, already split into reasoning and answer."""

    index: int
    content: str = ""
    reasoning: str = ""
    finish_reason: OutputFinish | None = None
    usage: Usage | None = None
    tokens: int = 0  # generated tokens behind this piece (usage metering counts them)
    logprobs: tuple[TokenLogprob, ...] = ()
    stop_reason: str | int | None = None  # "repetition": the repetition guard ended it
    tool_calls: tuple[ToolCallDelta, ...] = ()  # pieces of parsed tool calls (api.tools)


class OutputSplitter(Protocol):
    def feed(self, text: str) -> ReasoningDelta: ...

    def finish(self) -> ReasoningDelta: ...


class RawOutput:
    """No reasoning split: everything is content, after an optional prefix."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def feed(self, text: str) -> ReasoningDelta:
        text, self._prefix = self._prefix + text, ""
        return ReasoningDelta(reasoning="", content=text)

    def finish(self) -> ReasoningDelta:
        return self.feed("")


def split(index: int, delta: Delta, splitter: OutputSplitter) -> Output:
    """One engine delta as an output of choice ``index``."""
    piece = splitter.feed(delta.text)
    reasoning, content = piece.reasoning, piece.content
    if delta.finish_reason is not None:
        tail = splitter.finish()
        reasoning += tail.reasoning
        content += tail.content
    return Output(
        index,
        content,
        reasoning,
        delta.finish_reason,
        delta.usage,
        len(delta.token_ids),
        delta.logprobs,
        delta.stop_reason,
    )


async def _guarded(
    index: int,
    stream: DeltaStream,
    splitter: OutputSplitter,
    prompt_tokens: int,
    guard: RepetitionGuard | None,
) -> AsyncGenerator[Output, None]:
    """One stream's outputs; a loop the guard sees ends it with stop_reason "repetition".

    The engine request is aborted then, so its usage is counted here: every token so far, and
    as reasoning those of pieces that were all reasoning (a close estimate).
    """
    tokens = reasoning_tokens = 0
    try:
        async for delta in stream:
            out = split(index, delta, splitter)
            if guard is None or out.finish_reason is not None:
                yield out
                continue
            tokens += out.tokens
            if out.reasoning and not out.content:
                reasoning_tokens += out.tokens
            if not guard.feed(out.reasoning + out.content):
                yield out
                continue
            await stream.aclose()
            tail = splitter.finish()
            usage = Usage(prompt_tokens, tokens, reasoning_tokens)
            yield replace(
                out,
                content=out.content + tail.content,
                reasoning=out.reasoning + tail.reasoning,
                finish_reason="stop",
                stop_reason=REPETITION,
                usage=usage,
            )
            return
    finally:
        await stream.aclose()


def merge(
    streams: list[DeltaStream],
    splitters: list[OutputSplitter],
    prompt_lens: list[int],
    repetition_guard: bool,
) -> AsyncIterator[Output]:
    """Yield every stream's outputs as they come; closing this closes them all."""
    sources = [
        _guarded(
            i, stream, splitters[i], prompt_lens[i], RepetitionGuard() if repetition_guard else None
        )
        for i, stream in enumerate(streams)
    ]
    if len(streams) == 1:  # one stream is its own merge (one generator less per token)
        return sources[0]
    return _merged(streams, sources)


async def _merged(
    streams: list[DeltaStream], sources: list[AsyncGenerator[Output, None]]
) -> AsyncIterator[Output]:
    queue: asyncio.Queue[Output | BaseException] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for out in sources[index]:
                await queue.put(out)
        except Exception as exc:
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(i)) for i in range(len(streams))]
    try:
        pending = len(streams)
        while pending:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item.finish_reason is not None:
                pending -= 1
            yield item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            await stream.aclose()
