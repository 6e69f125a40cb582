"""What a request asks of sampling, in no wire format's terms, and the engine's parameters for it.

Each wire format maps its own fields onto a ``SamplingRequest`` (already inside the ranges of
``generation.bounds``); ``sampling_params`` fills what is unset from the model's defaults and
then the server's fallbacks, and checks what needs the model (token ids in its vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from r1serve.engine.protocol import SamplingParams
from r1serve.errors import RequestError
from r1serve.generation.reasoning import ReasoningEffort, reasoning_budget

# What the engine uses when neither the request nor the model says.
SERVER_FALLBACKS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
}
_UNSET_PENALTIES = {"presence_penalty": 0.0, "frequency_penalty": 0.0}


@dataclass(frozen=True, slots=True)
class SamplingRequest:
    """The sampling a request asks for; None: the model's default, else the server's."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # -1 or 0: off
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logit_bias: Mapping[str, float] = field(default_factory=dict)
    logprobs: int | None = None  # alternatives per token; None: no log probabilities
    max_reasoning_tokens: int | None = None
    reasoning_effort: ReasoningEffort | None = None


@runtime_checkable
class AsksSampling(Protocol):
    """A wire request that knows its ``SamplingRequest`` (the OpenAI schemas do)."""

    def sampling_request(self) -> SamplingRequest: ...


def sampling_params(
    req: SamplingRequest, defaults: Mapping[str, Any], vocab_size: int
) -> SamplingParams:
    """Engine sampling parameters from a request, with the model's ``defaults``."""

    def pick(name: str) -> Any:
        value = getattr(req, name)
        if value is not None:
            return value
        fallback = SERVER_FALLBACKS.get(name, _UNSET_PENALTIES.get(name))
        return defaults.get(name, fallback)

    bias: dict[int, float] = {}
    for key, value in req.logit_bias.items():
        token = int(key)
        if token >= vocab_size:
            raise RequestError(
                f"logit_bias token id {token} is outside the vocabulary (size {vocab_size})",
                param="logit_bias",
            )
        bias[token] = value
    for token in req.stop_token_ids:
        if token >= vocab_size:
            raise RequestError(
                f"stop_token_ids: {token} is outside the vocabulary (size {vocab_size})",
                param="stop_token_ids",
            )
    return SamplingParams(
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        top_k=max(0, pick("top_k")),
        min_p=pick("min_p"),
        repetition_penalty=pick("repetition_penalty"),
        presence_penalty=pick("presence_penalty"),
        frequency_penalty=pick("frequency_penalty"),
        seed=None if req.seed is None else req.seed % 2**64,
        max_tokens=req.max_tokens,
        stop=req.stop,
        stop_token_ids=req.stop_token_ids,
        ignore_eos=req.ignore_eos,
        logit_bias=bias,
        logprobs=req.logprobs,
        max_reasoning_tokens=reasoning_budget(
            req.max_reasoning_tokens, req.reasoning_effort, defaults.get("max_reasoning_tokens")
        ),
    )
