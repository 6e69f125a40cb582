"""The bounds of every sampling setting a request may name, defined once for every wire format.

The OpenAI schemas (``api.schemas``), the Ollama options (``api.ollama_schemas``), the simple
endpoints' query parameters (``api.routes.simple``) and a conversation's reply settings
(``conversations.settings``) all take their ranges from here, so a value one of them refuses is
refused by all, naming the same parameter. Where a wire format has an "off" value outside the
range (Ollama's ``top_p: 0``, OpenAI's ``top_k: -1``), the wider type is derived here too.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from r1serve.engine.bounds import (  # noqa: F401  (re-exported: the wire formats' ranges)
    CHOICES,
    LOGIT_BIAS,
    MAX_LOGIT_BIAS,
    MAX_N,
    MAX_STOP_LENGTH,
    MAX_STOP_STRINGS,
    MAX_STOP_TOKEN_IDS,
    MAX_TIMEOUT_S,
    MAX_TOKENS,
    MAX_TOKENS_CAP,
    MAX_TOP_LOGPROBS,
    MIN_P,
    PENALTY,
    REASONING_TOKENS,
    REPETITION_PENALTY,
    SEED,
    TEMPERATURE,
    TIMEOUT_S,
    TOP_K,
    TOP_LOGPROBS,
    TOP_P,
    Bound,
)
from r1serve.text import check_unicode


def _int(bound: Bound) -> dict[str, Any]:
    return {k: int(v) for k, v in bound.kwargs().items()}


Temperature = Annotated[float, Field(**TEMPERATURE.kwargs())]
TopP = Annotated[float, Field(**TOP_P.kwargs())]
TopK = Annotated[int, Field(**_int(TOP_K))]
MinP = Annotated[float, Field(**MIN_P.kwargs())]
RepetitionPenalty = Annotated[float, Field(**REPETITION_PENALTY.kwargs())]
Penalty = Annotated[float, Field(**PENALTY.kwargs())]
Seed = Annotated[int, Field(**_int(SEED))]
MaxTokens = Annotated[int, Field(**_int(MAX_TOKENS))]
ReasoningTokens = Annotated[int, Field(**_int(REASONING_TOKENS))]
Choices = Annotated[int, Field(**_int(CHOICES))]
LogitBias = Annotated[float, Field(**LOGIT_BIAS.kwargs())]
TopLogprobs = Annotated[int, Field(**_int(TOP_LOGPROBS))]
TimeoutS = Annotated[float, Field(**TIMEOUT_S.kwargs())]

# The same ranges widened by a wire format's own "off" value.
TopKOrDisabled = Annotated[int, Field(ge=-1, le=int(TOP_K.le or 0))]  # OpenAI/vLLM's -1: off
TopPOrOff = Annotated[float, Field(ge=0.0, le=TOP_P.le)]  # Ollama's 0: off
RepetitionPenaltyOrOff = Annotated[float, Field(ge=0.0, le=REPETITION_PENALTY.le)]  # Ollama's 0
NumPredict = Annotated[int, Field(ge=-2, le=MAX_TOKENS_CAP)]  # Ollama's -1/-2: no cap


def check_stops(stops: list[str]) -> None:
    """ValueError (a 400 once pydantic reports it) for too many, empty or overlong stop strings."""
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    for stop in stops:
        if not stop:
            raise ValueError("stop strings must not be empty")
        if len(stop) > MAX_STOP_LENGTH:
            raise ValueError(f"stop strings are at most {MAX_STOP_LENGTH} characters")
        check_unicode(stop)
