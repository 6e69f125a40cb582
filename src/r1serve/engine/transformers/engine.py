"""``LocalEngine``: the Engine interface over r1serve's scheduler thread and a model runner."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from r1serve.engine.grammar import ConstraintCompiler, Guide
from r1serve.engine.protocol import (
    Delta,
    EngineStats,
    FinishHook,
    GenerationRequest,
    Prompt,
    Tokenizer,
    output_budget,
    with_queued,
)
from r1serve.engine.text.thinking import thinking_tokens
from r1serve.engine.transformers.runner import ModelRunner
from r1serve.engine.transformers.scheduler import Channel, Scheduler, SchedulerConfig
from r1serve.errors import ContextLengthError, RequestError


class ChatRenderer(Protocol):
    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Prompt: ...


class LocalEngine:
    """Runs a model in this process: one scheduler thread, any number of async callers."""

    def __init__(
        self,
        *,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        chat: ChatRenderer,
        model_name: str,
        context_length: int,
        eos_token_ids: frozenset[int],
        scheduler_config: SchedulerConfig | None = None,
        default_sampling: Mapping[str, Any] | None = None,
        kind: str = "transformers",
        constraints: ConstraintCompiler | None = None,
    ) -> None:
        self._kind = kind
        self._runner = runner
        self._tokenizer = tokenizer
        self._chat = chat
        self._model_name = model_name
        # One slot bounds what a single request can use, whatever the model allows.
        self._context_length = min(context_length, runner.kv.max_seq_len)
        self._model_context_length = context_length
        self._default_sampling: Mapping[str, Any] = dict(default_sampling or {})
        self.scheduler = Scheduler(
            runner, tokenizer, eos_token_ids, scheduler_config, thinking_tokens(tokenizer)
        )
        self.constraints = constraints  # None: constrained decoding is refused
        self._started = False

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def default_sampling(self) -> Mapping[str, Any]:
        return self._default_sampling

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def chat_template(self) -> str:
        """The Jinja chat template's source, where the renderer keeps it."""
        return str(getattr(self._chat, "source", ""))

    @property
    def runner(self) -> ModelRunner:
        return self._runner

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Prompt:
        return self._chat.render(messages, add_generation_prompt=add_generation_prompt, tools=tools)

    def add_finish_listener(self, listener: FinishHook) -> None:
        """Call ``listener`` (on the model thread) whenever a request ends."""
        self.scheduler.finish_listeners.append(listener)

    async def start(self) -> None:
        if not self._started:
            if self.constraints is not None:
                self.constraints.warm()
            self.scheduler.start()
            self._started = True

    async def close(self) -> None:
        if self._started:
            await asyncio.to_thread(self.scheduler.stop)
            self._started = False

    def stats(self) -> EngineStats:
        return self.scheduler.stats()

    def resolve_max_tokens(self, prompt_len: int, max_tokens: int | None) -> int:
        """The output budget of a request, or ContextLengthError with the numbers."""
        return output_budget(
            prompt_len, max_tokens, self._context_length, self._model_context_length
        )

    def check_admission(self, pending: int = 0) -> None:
        """OverloadedError when the scheduler would refuse a request now (nothing is queued)."""
        self.scheduler.check_admission(pending)

    async def submit(self, request: GenerationRequest) -> RequestStream:
        """Queue the request (errors raise here, before any response starts); stream the deltas."""
        if not request.prompt_token_ids:
            raise ContextLengthError("the prompt is empty", param="prompt")
        max_tokens = self.resolve_max_tokens(
            len(request.prompt_token_ids), request.params.max_tokens
        )
        guide = await self._guide(request)
        channel = Channel(request.request_id, asyncio.get_running_loop())
        self.scheduler.submit(request, max_tokens, channel, guide)
        return RequestStream(self.scheduler, channel)

    async def _guide(self, request: GenerationRequest) -> Guide | None:
        constraint = request.params.constraint
        if constraint is None:
            return None
        if self.constraints is None:
            raise RequestError(
                "this engine cannot constrain its output (structured output, required tools)",
                param="response_format",
            )
        return await self.constraints.guide(constraint)


class RequestStream:
    """The deltas of one request. Closing it, or dropping it unread, aborts the request."""

    __slots__ = ("_channel", "_done", "_scheduler")

    def __init__(self, scheduler: Scheduler, channel: Channel) -> None:
        self._scheduler = scheduler
        self._channel = channel
        self._done = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        try:
            delta = with_queued(await self._channel.queue.get(), self._channel.queue)
        except BaseException:  # cancelled while waiting: the caller is gone
            await self.aclose()
            raise
        if delta.finish_reason is not None:
            self._done = True
        return delta

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._scheduler.abort(self._channel.request_id)

    def __del__(self) -> None:
        if not self._done:
            self._scheduler.abort(self._channel.request_id)
