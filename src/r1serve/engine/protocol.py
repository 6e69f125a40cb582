"""The Engine interface every backend implements, and the values that cross it.

An engine takes a tokenized prompt with sampling parameters. ``await engine.submit(request)``
raises before any response starts (bad input, context overflow, overload) and returns a
``DeltaStream``: new text (never half a UTF-8 character, never part of a stop string), the token
ids behind it, and on the last delta the finish reason and usage. Closing the stream (or dropping
it unread) aborts the request. Finish listeners learn how every request ended, with timings, for
metrics, logs and usage; ``stats`` gives neutral numbers about load.

Backends: ``r1serve.engine.transformers`` (r1serve's scheduler over PyTorch), the fake engine
for tests (``r1serve.engine.fake``, through the same scheduler), and whatever
``r1serve.engine.registry`` names. ``tests/engine/test_contract.py`` runs one suite of cases
against each of them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from r1serve.engine import bounds
from r1serve.engine.bounds import Bound
from r1serve.errors import ContextLengthError, RequestError

FinishReason = Literal["stop", "length", "timeout", "abort", "error"]
"""``stop``: EOS or a stop string; ``length``: max_tokens or the context is full;
``timeout``: the per-request time limit; ``abort``: cancelled; ``error``: the engine failed."""


GREEDY_BELOW = 1e-5
"""Temperatures below this (0 included) decode greedily: softmax(logits / T) is then the argmax
in all but exact ties, and dividing float32 logits by a T that rounds to 0 (below ~1e-45) would
give NaN instead (vLLM uses the same threshold)."""


@dataclass(frozen=True, slots=True)
class Constraint:
    """What the output must match: a JSON schema, any JSON object, a Lark grammar or a regex.

    ``source`` is the schema's JSON text or the grammar text. With ``after`` the constraint
    applies only once the output contains that text (``"</think>"``: R1's reasoning runs free).
    A backend that cannot honour a constraint raises RequestError at submit.
    """

    kind: Literal["json_schema", "json_object", "lark", "regex"]
    source: str
    after: str | None = None
    # For a required or named tool_choice: "required" or the function's name. A backend with
    # tool calling of its own (an upstream server) asks for that instead of using the grammar.
    tool_choice: str | None = None


MAX_TOP_LOGPROBS = bounds.MAX_TOP_LOGPROBS
LOGPROB_FLOOR = -9999.0  # what OpenAI reports for impossible tokens (JSON has no -inf)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request decoding settings. ``temperature < GREEDY_BELOW`` (0 too) means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # 1: off; divides positive logits of seen tokens
    presence_penalty: float = 0.0  # OpenAI semantics, -2..2
    frequency_penalty: float = 0.0  # OpenAI semantics, -2..2
    seed: int | None = None
    max_tokens: int | None = None  # None: fill the context
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    constraint: Constraint | None = None  # constrained decoding (structured output, tool calls)
    logprobs: int | None = None  # None: off; 0..20: log probabilities with this many alternatives
    max_reasoning_tokens: int | None = None  # None: unbounded; then the end-of-thinking is forced

    def __post_init__(self) -> None:
        checks: list[tuple[str, Bound]] = [
            ("temperature", bounds.TEMPERATURE),
            ("top_p", bounds.TOP_P),
            ("top_k", bounds.TOP_K),
            ("min_p", bounds.MIN_P),
            ("repetition_penalty", bounds.REPETITION_PENALTY),
            ("presence_penalty", bounds.PENALTY),
            ("frequency_penalty", bounds.PENALTY),
        ]
        for name, bound in checks:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise RequestError(f"{name} must be a finite number", param=name)
            if not bound.contains(value):
                raise RequestError(f"{name} must be {bound.describe()}, got {value!r}", param=name)
        if self.max_tokens is not None and not bounds.MAX_TOKENS.contains(self.max_tokens):
            raise RequestError(
                f"max_tokens must be {bounds.MAX_TOKENS.describe()}", param="max_tokens"
            )
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise RequestError(
                f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs"
            )
        if self.max_reasoning_tokens is not None and not bounds.REASONING_TOKENS.contains(
            self.max_reasoning_tokens
        ):
            raise RequestError(
                f"max_reasoning_tokens must be {bounds.REASONING_TOKENS.describe()}",
                param="max_reasoning_tokens",
            )

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True, slots=True)
class PromptOrigin:
    """What a prompt was made from, for a backend that sends messages or text on instead of token
    ids (an upstream server applies its own chat template); local engines ignore it."""

    messages: tuple[Mapping[str, object], ...] = ()
    text: str | None = None  # a raw completion prompt
    tools: tuple[Mapping[str, object], ...] = ()  # the tool definitions offered (OpenAI's shape)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate. ``max_tokens`` is resolved by the caller against the context."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    timeout_s: float | None = None  # wall-clock limit from submission; finish reason "timeout"
    origin: PromptOrigin | None = None  # the prompt's messages or text (upstream engines)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0  # generated tokens inside the thinking block (part of completion)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log probability and the ``top`` most likely (id, logprob) pairs.

    Computed from the logits the sampler saw after repetition/presence/frequency penalties and
    logit_bias, before temperature and top-k/top-p/min-p (so greedy and sampled requests report
    the same distribution). Forced tokens (an inserted end-of-thinking) carry their logprob too.
    """

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one request's output."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or token id that ended it
    usage: Usage | None = None  # on the last delta only
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token id, when the request asked


@runtime_checkable
class Tokenizer(Protocol):
    """The part of a tokenizer the server uses."""

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Tokenize template text: control-token strings become control tokens."""
        ...

    def encode_plain(self, text: str) -> list[int]:
        """Tokenize user text: strings like ``<|im_start|>`` stay ordinary text."""
        ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str: ...


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered, tokenized prompt."""

    token_ids: tuple[int, ...]
    text: str
    opens_reasoning: bool = False  # the template ended the prompt inside ``<think>``
    tool_format: str | None = None  # with tools offered: the call form the model was told to use
    origin: PromptOrigin | None = None  # the messages or text it was made from


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Load figures every backend gives; KV figures are None where the backend cannot tell."""

    running: int
    waiting: int
    max_running: int
    max_waiting: int
    kv_tokens_used: int | None = None
    kv_tokens_total: int | None = None
    rejected: int = 0  # requests refused because the waiting queue was full
    prefix_cache_hits: int = 0  # prompt tokens whose KV came from a cached prefix


@dataclass(slots=True)
class RequestTimings:
    """Monotonic timestamps of one request, for metrics and logs."""

    submitted: float
    admitted: float | None = None
    first_token: float | None = None
    finished: float | None = None


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """What finish listeners learn when a request ends (for metrics, logs and usage)."""

    request_id: str
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timings: RequestTimings


FinishHook = Callable[[FinishedRequest], None]


def with_queued(first: Delta, queue: asyncio.Queue[Delta]) -> Delta:
    """``first`` joined with every delta already waiting behind it in ``queue``.

    A reader that fell behind (a busy event loop, many streams) then pays the per-chunk cost
    (SSE event, JSON, send) once for what is queued, not once per token; a reader that keeps
    up sees one delta per step as before. Nothing follows a finished delta, so the end (reason,
    usage) is always the last one's.
    """
    if first.finish_reason is not None or queue.empty():
        return first
    parts = [first]
    while not queue.empty() and parts[-1].finish_reason is None:
        parts.append(queue.get_nowait())
    last = parts[-1]
    return Delta(
        text="".join(part.text for part in parts),
        token_ids=tuple(token for part in parts for token in part.token_ids),
        finish_reason=last.finish_reason,
        stop_reason=last.stop_reason,
        usage=last.usage,
        logprobs=tuple(lp for part in parts for lp in part.logprobs),
    )


@runtime_checkable
class DeltaStream(Protocol):
    """The deltas of one submitted request; ``aclose`` (or dropping it) aborts the request."""

    def __aiter__(self) -> AsyncIterator[Delta]: ...

    async def __anext__(self) -> Delta: ...

    async def aclose(self) -> None: ...


def output_budget(
    prompt_len: int, max_tokens: int | None, context: int, model_context: int | None = None
) -> int:
    """Tokens a request may generate within ``context``, or ContextLengthError with the numbers.

    ``context`` is what one request can hold on this server; ``model_context`` what the model
    allows, when that is more (the message then says which limit applies).
    """
    limit = (
        f"{context} tokens"
        if model_context is None or model_context == context
        else f"{context} tokens per request (KV cache slot; the model allows {model_context})"
    )
    if prompt_len >= context:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens, but this server's context is {limit}, "
            "which must also leave room for at least one output token"
        )
    room = context - prompt_len
    if max_tokens is None:
        return room
    if max_tokens > room:
        raise ContextLengthError(
            f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) = "
            f"{prompt_len + max_tokens} tokens, more than the context of {limit}; "
            f"ask for at most {room} tokens",
            param="max_tokens",
        )
    return max_tokens


@runtime_checkable
class Engine(Protocol):
    """Something that turns prompts into streams of deltas: the one interface of every backend."""

    @property
    def model_name(self) -> str: ...

    @property
    def kind(self) -> str:
        """The backend's registry name: ``transformers``, ``llamacpp``, ``fake``…"""
        ...

    @property
    def context_length(self) -> int:
        """Tokens (prompt + output) one request can hold on this server."""
        ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def default_sampling(self) -> Mapping[str, Any]:
        """The model's recommended sampling values (``temperature``, ``top_p``…) where known."""
        ...

    def render_chat(
        self,
        messages: Sequence[Mapping[str, object]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, object]] | None = None,
    ) -> Prompt:
        """Apply the chat template; user-supplied text never becomes control tokens.

        ``tools`` (OpenAI tool definitions) are described by the template or by r1serve's
        generic tool prompt; ``Prompt.tool_format`` then says how the model will write calls.
        """
        ...

    def resolve_max_tokens(self, prompt_len: int, max_tokens: int | None) -> int:
        """The output budget of a request against the context, or ContextLengthError."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def check_admission(self, pending: int = 0) -> None:
        """Raise OverloadedError (cheaply, without queuing anything) when ``submit`` would, with
        ``pending`` more requests already on their way in; callers check before tokenizing."""
        ...

    async def submit(self, request: GenerationRequest) -> DeltaStream:
        """Queue a request; raise RequestError/ContextLengthError/OverloadedError before any
        output. The stream ends with a delta that has a finish reason and usage."""
        ...

    def add_finish_listener(self, listener: FinishHook) -> None:
        """Call ``listener`` whenever a request ends (from any thread; keep it quick), before
        the stream's last delta reaches the caller."""
        ...

    def stats(self) -> EngineStats: ...
