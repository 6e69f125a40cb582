"""What the HTTP layer needs from an engine, and the values that cross between them.

An engine takes a tokenized prompt with sampling parameters and yields ``Delta`` values: new
text (never half a UTF-8 character, never part of a stop string), the token ids behind it, and
on the last one the finish reason and usage. Closing the async iterator aborts the request.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from r1serve.errors import RequestError

FinishReason = Literal["stop", "length", "timeout", "abort", "error"]
"""``stop``: EOS or a stop string; ``length``: max_tokens or the context is full;
``timeout``: the per-request time limit; ``abort``: cancelled; ``error``: the engine failed."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request decoding settings. ``temperature == 0`` means greedy."""

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

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("temperature", 0.0 <= self.temperature <= 100.0, "between 0 and 100"),
            ("top_p", 0.0 < self.top_p <= 1.0, "greater than 0 and at most 1"),
            ("top_k", self.top_k >= 0, "0 (off) or positive"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "between 0 and 1"),
            ("repetition_penalty", 0.0 < self.repetition_penalty <= 10.0, "in (0, 10]"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "between -2 and 2"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0, "between -2 and 2"),
        ]
        for name, ok, rule in checks:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise RequestError(f"{name} must be a finite number", param=name)
            if not ok:
                raise RequestError(f"{name} must be {rule}, got {value!r}", param=name)
        if self.max_tokens is not None and self.max_tokens < 1:
            raise RequestError("max_tokens must be at least 1", param="max_tokens")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate. ``max_tokens`` is resolved by the caller against the context."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    timeout_s: float | None = None  # wall-clock limit from submission; finish reason "timeout"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one request's output."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or token id that ended it
    usage: Usage | None = None  # on the last delta only


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


@dataclass(frozen=True, slots=True)
class EngineStats:
    running: int
    waiting: int
    max_running: int
    max_waiting: int
    kv_tokens_used: int
    kv_tokens_total: int
    rejected: int = 0  # requests refused because the waiting queue was full
    prefix_cache_hits: int = 0  # prompt tokens whose KV came from a cached prefix


@runtime_checkable
class Engine(Protocol):
    """Something that turns prompts into streams of deltas."""

    @property
    def model_name(self) -> str: ...

    @property
    def context_length(self) -> int: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def render_chat(
        self, messages: Sequence[Mapping[str, object]], *, add_generation_prompt: bool = True
    ) -> Prompt:
        """Apply the chat template; user-supplied text never becomes control tokens."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream the output. Closing the iterator early aborts the request."""
        ...

    def stats(self) -> EngineStats: ...
