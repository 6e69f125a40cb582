"""The bounds of every sampling setting a request may name, defined once for every wire format.

The OpenAI schemas (``api.schemas``), the Ollama options (``api.ollama_schemas``), the simple
endpoints' query parameters (``api.routes.simple``) and a conversation's reply settings
(``conversations.settings``) all take their ranges from here, so a value one of them refuses is
refused by all, naming the same parameter. Where a wire format has an "off" value outside the
range (Ollama's ``top_p: 0``, OpenAI's ``top_k: -1``), the wider type is derived here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from r1serve.text import check_unicode

MAX_TOKENS_CAP = 2**31 - 1
MAX_N = 8
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 1024
MAX_STOP_TOKEN_IDS = 64
MAX_LOGIT_BIAS = 1024
MAX_TOP_LOGPROBS = 20
MAX_TIMEOUT_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Bound:
    """A closed or open numeric range; ``kwargs`` are the pydantic/FastAPI constraints."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le),
                                  ("lt", self.lt)) if v is not None}  # fmt: skip

    def contains(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


TEMPERATURE = Bound(ge=0.0, le=100.0)
TOP_P = Bound(gt=0.0, le=1.0)
TOP_K = Bound(ge=0, le=1_000_000)  # 0: off
MIN_P = Bound(ge=0.0, le=1.0)
REPETITION_PENALTY = Bound(gt=0.0, le=10.0)  # 1: off
PENALTY = Bound(ge=-2.0, le=2.0)  # presence and frequency penalties; 0: off
SEED = Bound(ge=-(2**63), lt=2**64)  # taken modulo 2**64
MAX_TOKENS = Bound(ge=1, le=MAX_TOKENS_CAP)
REASONING_TOKENS = Bound(ge=0, le=MAX_TOKENS_CAP)
CHOICES = Bound(ge=1, le=MAX_N)
LOGIT_BIAS = Bound(ge=-100.0, le=100.0)
TOP_LOGPROBS = Bound(ge=0, le=MAX_TOP_LOGPROBS)
TIMEOUT_S = Bound(gt=0.0, le=MAX_TIMEOUT_S)


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
