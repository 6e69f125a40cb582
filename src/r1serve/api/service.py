"""Turns wire requests into engine requests and engine deltas into wire responses.

Routes stay thin: they hand a validated request to ``CompletionService`` and return what it
gives back. Everything OpenAI-specific about streaming (role chunk first, reasoning split,
finish chunk, usage chunk, ``[DONE]``) lives here and in ``api.sse``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from r1serve.api import tools
from r1serve.api.logprobs import TokenText, chat_logprobs, completion_logprobs
from r1serve.api.prompts import PromptWorkers
from r1serve.api.reasoning_control import reasoning_budget, skip_reasoning
from r1serve.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionTokensDetails,
    GenerateResponse,
    SamplingFields,
    UsageInfo,
)
from r1serve.engine.protocol import (
    Delta,
    DeltaStream,
    Engine,
    FinishReason,
    GenerationRequest,
    Prompt,
    PromptOrigin,
    SamplingParams,
    TokenLogprob,
    Usage,
)
from r1serve.engine.text.reasoning import ReasoningDelta, ReasoningSplitter
from r1serve.engine.text.repetition import RepetitionGuard
from r1serve.errors import EngineError, NotFoundError, RequestError

if TYPE_CHECKING:
    from r1serve.api.tools import ToolCallDelta

log = logging.getLogger("r1serve.api")

ReasoningFormat = Literal["split", "raw"]


@dataclass(frozen=True, slots=True)
class Output:
    """One piece of one choice's output, already split into reasoning and answer."""

    index: int
    content: str = ""
    reasoning: str = ""
    finish_reason: FinishReason | Literal["tool_calls"] | None = None
    usage: Usage | None = None
    tokens: int = 0  # generated tokens behind this piece (usage metering counts them)
    logprobs: tuple[TokenLogprob, ...] = ()
    stop_reason: str | int | None = None  # "repetition": the repetition guard ended it
    tool_calls: tuple[ToolCallDelta, ...] = ()  # pieces of parsed tool calls (api.tools)


REPETITION = "repetition"  # stop_reason of a reply the repetition guard ended


@dataclass(slots=True)
class _Totals:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: FinishReason | Literal["tool_calls"] | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    stop_reason: str | int | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class CompletionService:
    """Validates, prompts and runs requests against one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        reasoning_format: ReasoningFormat = "split",
        default_sampling: dict[str, Any] | None = None,
        default_timeout_s: float | None = None,
        prompt_workers: int = 2,
        max_prompt_chars: int | None = None,
    ) -> None:
        self.engine = engine
        self.prompts = PromptWorkers(engine, threads=prompt_workers, max_chars=max_prompt_chars)
        self.reasoning_format = reasoning_format
        self.default_sampling = dict(default_sampling or {})
        self.default_timeout_s = default_timeout_s

    # ---- building requests --------------------------------------------------------------

    def check_model(self, name: str | None) -> str:
        """The served model id; 404 for any other name."""
        served = self.engine.model_name
        if name is not None and name != served:
            raise NotFoundError(
                f"model {name[:200]!r} is not served here; this server serves {served!r}",
                param="model",
                code="model_not_found",
            )
        return served

    def sampling(self, req: SamplingFields) -> SamplingParams:
        """Engine sampling parameters from a request, with the model's defaults."""
        d = self.default_sampling

        def pick(name: str, fallback: Any) -> Any:
            value = getattr(req, name)
            return value if value is not None else d.get(name, fallback)

        top_k = pick("top_k", 0)
        bias: dict[int, float] = {}
        vocab = self.engine.tokenizer.vocab_size
        for key, value in (req.logit_bias or {}).items():
            token = int(key)
            if token >= vocab:
                raise RequestError(
                    f"logit_bias token id {token} is outside the vocabulary (size {vocab})",
                    param="logit_bias",
                )
            bias[token] = value
        for token in req.stop_token_ids or ():
            if token >= vocab:
                raise RequestError(
                    f"stop_token_ids: {token} is outside the vocabulary (size {vocab})",
                    param="stop_token_ids",
                )
        return SamplingParams(
            temperature=pick("temperature", 1.0),
            top_p=pick("top_p", 1.0),
            top_k=max(0, top_k),
            min_p=pick("min_p", 0.0),
            repetition_penalty=pick("repetition_penalty", 1.0),
            presence_penalty=pick("presence_penalty", 0.0),
            frequency_penalty=pick("frequency_penalty", 0.0),
            seed=None if req.seed is None else req.seed % 2**64,
            max_tokens=req.max_tokens,
            stop=req.stop_list(),
            stop_token_ids=tuple(req.stop_token_ids or ()),
            ignore_eos=req.ignore_eos,
            logit_bias=bias,
            logprobs=req.logprob_count(),
            max_reasoning_tokens=reasoning_budget(
                getattr(req, "max_reasoning_tokens", None),
                getattr(req, "reasoning_effort", None),
                d.get("max_reasoning_tokens"),
            ),
        )

    def chat_prompt(self, req: ChatCompletionRequest) -> Prompt:
        prompt = self.engine.render_chat(
            tools.chat_messages(req), add_generation_prompt=True, tools=tools.offered_tools(req)
        )
        if req.reasoning_effort == "none":
            prompt = skip_reasoning(prompt, self.engine.tokenizer)
        return prompt

    async def start_chat(
        self, req: ChatCompletionRequest, request_id: str
    ) -> tuple[Prompt, AsyncIterator[Output]]:
        """The prompt and merged outputs of a chat request, tool calls and constraints applied."""
        prompt = await self.prepare_chat(req)
        params = replace(self.sampling(req), constraint=tools.chat_constraint(req, prompt))
        outputs = await self.start(
            request_id,
            [prompt],
            params,
            n=req.n,
            timeout=req.timeout,
            repetition_guard=req.repetition_guard,
        )
        setup = tools.tool_setup(req, prompt)
        if setup is not None:
            outputs = tools.with_tool_calls(outputs, setup, req.n)
        return prompt, outputs

    async def prepare_chat(self, req: ChatCompletionRequest) -> Prompt:
        """``chat_prompt`` off the event loop, after the size and admission checks."""
        chars = sum(len(m.text()) for m in req.messages)
        return await self.prompts.prepare(chars, lambda: self.chat_prompt(req))

    async def prepare_texts(self, texts: Sequence[str]) -> list[Prompt]:
        """``text_prompt`` of each text off the event loop, after the same checks."""
        chars = sum(len(t) for t in texts)
        build = lambda: [self.text_prompt(t) for t in texts]  # noqa: E731
        return await self.prompts.prepare(chars, build, param="prompt")

    def text_prompt(self, text: str) -> Prompt:
        ids = self.engine.tokenizer.encode(text, add_special_tokens=True)
        if not ids:
            raise RequestError("prompt is empty after tokenization", param="prompt")
        return Prompt(token_ids=tuple(ids), text=text, origin=PromptOrigin(text=text))

    def _requests(
        self,
        base_id: str,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        n: int,
        timeout: float | None,
    ) -> list[GenerationRequest]:
        out = []
        limits = [t for t in (timeout, self.default_timeout_s) if t]
        timeout = min(limits) if limits else None
        for p_index, prompt in enumerate(prompts):
            for i in range(n):
                seed = params.seed
                if seed is not None and i:
                    seed = (seed + i) % 2**64  # n choices with one seed must still differ
                out.append(
                    GenerationRequest(
                        request_id=f"{base_id}-{p_index * n + i}",
                        prompt_token_ids=prompt.token_ids,
                        params=replace(params, seed=seed),
                        timeout_s=timeout,
                        origin=prompt.origin,
                    )
                )
        return out

    async def start(
        self,
        base_id: str,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        n: int = 1,
        timeout: float | None = None,
        split_reasoning: bool = True,
        repetition_guard: bool = False,
    ) -> AsyncIterator[Output]:
        """Submit every choice now (errors raise here) and merge their outputs."""
        requests = self._requests(base_id, prompts, params, n, timeout)
        streams: list[DeltaStream] = []
        try:
            for request in requests:
                streams.append(await self.engine.submit(request))
        except BaseException:
            for stream in streams:
                await stream.aclose()
            raise
        splitters: list[OutputSplitter] = []
        for prompt in prompts:
            for _ in range(n):
                if not split_reasoning:
                    splitters.append(RawOutput(""))
                elif self.reasoning_format == "raw":
                    # Keep the output well-formed: the template already opened the block.
                    splitters.append(RawOutput("<think>\n" if prompt.opens_reasoning else ""))
                else:
                    splitters.append(ReasoningSplitter(prompt.opens_reasoning))
        prompt_lens = [len(r.prompt_token_ids) for r in requests]
        return _merge(streams, splitters, prompt_lens, repetition_guard)

    # ---- whole responses ----------------------------------------------------------------

    async def collect(self, outputs: AsyncIterator[Output], choices: int) -> list[_Totals]:
        totals = [_Totals() for _ in range(choices)]
        async with contextlib.aclosing(outputs):  # type: ignore[type-var]
            async for out in outputs:
                t = totals[out.index]
                t.content.append(out.content)
                t.reasoning.append(out.reasoning)
                t.tool_calls.extend(out.tool_calls)
                t.logprobs.extend(out.logprobs)
                if out.finish_reason is not None:
                    if out.finish_reason == "error":
                        raise EngineError("the model failed while generating; see server log")
                    t.finish_reason = out.finish_reason
                    t.stop_reason = out.stop_reason
                    t.usage = out.usage
        return totals

    async def chat(self, req: ChatCompletionRequest, request_id: str) -> ChatCompletionResponse:
        model = self.check_model(req.model)
        prompt, outputs = await self.start_chat(req, request_id)
        totals = await self.collect(outputs, req.n)
        text = TokenText(self.engine.tokenizer)
        choices = []
        for i, t in enumerate(totals):
            reasoning = "".join(t.reasoning)
            calls = tools.whole_calls(t.tool_calls)
            message = AssistantMessage(
                content="".join(t.content) or (None if calls else ""),
                reasoning_content=reasoning or None,
                reasoning=reasoning or None,
                tool_calls=calls or None,
            )
            choices.append(
                ChatChoice(
                    index=i,
                    message=message,
                    finish_reason=t.finish_reason,
                    logprobs=chat_logprobs(t.logprobs, text) if req.logprobs else None,
                    stop_reason=t.stop_reason if t.stop_reason == REPETITION else None,
                )
            )
        return ChatCompletionResponse(
            id=request_id,
            created=int(time.time()),
            model=model,
            choices=choices,
            usage=usage_of(prompt, totals),
        )

    async def completion(self, req: CompletionRequest, request_id: str) -> CompletionResponse:
        model = self.check_model(req.model)
        texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        prompts = await self.prepare_texts(texts)
        outputs = await self.start(
            request_id,
            prompts,
            self.sampling(req),
            n=req.n,
            timeout=req.timeout,
            split_reasoning=False,
            repetition_guard=req.repetition_guard,
        )
        totals = await self.collect(outputs, len(prompts) * req.n)
        token_text = TokenText(self.engine.tokenizer)
        choices = []
        for i, t in enumerate(totals):
            text = "".join(t.content)
            offset = 0
            if req.echo:
                offset = len(prompts[i // req.n].text)
                text = prompts[i // req.n].text + text
            logprobs = None
            if req.logprobs is not None:
                logprobs = completion_logprobs(t.logprobs, token_text, offset)
            choices.append(
                CompletionChoice(
                    index=i,
                    text=text,
                    finish_reason=t.finish_reason,
                    logprobs=logprobs,
                    stop_reason=t.stop_reason if t.stop_reason == REPETITION else None,
                )
            )
        return CompletionResponse(
            id=request_id,
            created=int(time.time()),
            model=model,
            choices=choices,
            usage=usage_of(None, totals),
        )

    async def generate(
        self, prompt_text: str, params: SamplingParams, request_id: str
    ) -> GenerateResponse:
        """The simple ``POST /generate`` endpoint: chat template applied, answer apart."""
        prompt = await self.prompts.prepare(
            len(prompt_text),
            lambda: self.engine.render_chat([{"role": "user", "content": prompt_text}]),
            param="prompt",
        )
        totals = (await self.collect(await self.start(request_id, [prompt], params), 1))[0]
        reasoning = "".join(totals.reasoning)
        return GenerateResponse(
            response="".join(totals.content),
            reasoning=reasoning or None,
            finish_reason=totals.finish_reason,
            usage=usage_of(prompt, [totals]),
        )


def usage_of(prompt: Prompt | None, totals: Sequence[_Totals]) -> UsageInfo:
    """Usage over all choices; the prompt counts once per distinct prompt."""
    completion = sum(t.usage.completion_tokens for t in totals if t.usage)
    reasoning = sum(t.usage.reasoning_tokens for t in totals if t.usage)
    if prompt is not None:
        # The engine's count where it gave one: an upstream's own, where r1serve's estimated.
        reported = [t.usage.prompt_tokens for t in totals if t.usage]
        prompt_tokens = reported[0] if reported else len(prompt.token_ids)
    else:
        seen = {id(t): t.usage.prompt_tokens for t in totals if t.usage}
        prompt_tokens = sum(seen.values())
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning),
    )


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


def _split(index: int, delta: Delta, splitter: OutputSplitter) -> Output:
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
            out = _split(index, delta, splitter)
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


async def _merge(
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
    if len(streams) == 1:
        async with contextlib.aclosing(sources[0]):
            async for out in sources[0]:
                yield out
        return
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
