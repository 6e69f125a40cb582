"""The numeric range of every sampling setting, defined once (issue #11).

The engine checks a request's ``SamplingParams`` against these (``engine.protocol``), and the
wire formats build their schema types from the same ranges (``generation.bounds``), so no layer
can accept what another refuses. No pydantic here: the engine layer sits below the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    def describe(self) -> str:
        """The range in words, as error messages say it: "between 0 and 100"."""
        if self.ge is not None and self.le is not None:
            return f"between {_number(self.ge)} and {_number(self.le)}"
        parts = []
        if self.ge is not None:
            parts.append(f"at least {_number(self.ge)}")
        if self.gt is not None:
            parts.append(f"greater than {_number(self.gt)}")
        if self.le is not None:
            parts.append(f"at most {_number(self.le)}")
        if self.lt is not None:
            parts.append(f"less than {_number(self.lt)}")
        return " and ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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
