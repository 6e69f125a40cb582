"""Where a generation is relative to its thinking block, and the forced end of a thinking budget.

R1-style models think inside ``<think>…</think>`` before they answer. ``ThinkingTracker`` follows
one sequence token by token (pure; the scheduler owns one per request):

- It starts *reasoning* when the prompt ends inside ``<think>`` (the template opened it; blank
  tokens after the tag are skipped), else *opening*: the first non-blank generated token is
  either ``<think>`` (reasoning follows) or anything else (it is all answer).
- Reasoning tokens are the sampled tokens between the opening and the closing tag, neither tag
  counted. Forced tokens are never counted.
- With a budget of N, once N reasoning tokens are out the tracker hands the end-of-thinking
  tokens (``"\\n</think>\\n\\n"`` for R1) to the scheduler one per step, in place of what the
  model sampled; the model then writes its answer. A budget of 0 forces them at once.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from r1serve.engine.protocol import Tokenizer

END_OF_THINKING = "\n</think>\n\n"


class Phase(enum.Enum):
    OPENING = enum.auto()
    REASONING = enum.auto()
    ANSWER = enum.auto()


@dataclass(frozen=True, slots=True)
class ThinkingTokens:
    """A model's thinking tags as token ids, and the tokens that end a thinking block."""

    open_id: int | None
    close_id: int
    end_ids: tuple[int, ...]


def thinking_tokens(tokenizer: Tokenizer) -> ThinkingTokens | None:
    """The tags of a model whose vocabulary has ``</think>`` as one token; None otherwise."""
    close = tokenizer.encode("</think>")
    if len(close) != 1:
        return None
    opened = tokenizer.encode("<think>")
    end = tuple(tokenizer.encode(END_OF_THINKING))
    if close[0] not in end:
        return None
    return ThinkingTokens(opened[0] if len(opened) == 1 else None, close[0], end)


def prompt_opens_thinking(
    prompt_ids: Sequence[int], tokens: ThinkingTokens, is_blank: Callable[[int], bool]
) -> bool:
    """True when the prompt ends inside a thinking block (``<think>`` then blank tokens)."""
    for token in reversed(prompt_ids):
        if token == tokens.open_id:
            return True
        if not is_blank(token):
            return False
    return False


class ThinkingTracker:
    """One sequence's phase, reasoning token count and pending forced tokens."""

    __slots__ = ("_budget", "_forced", "_is_blank", "_tokens", "phase", "reasoning_tokens")

    def __init__(
        self,
        tokens: ThinkingTokens,
        *,
        starts_in_reasoning: bool,
        budget: int | None,
        is_blank: Callable[[int], bool],
    ) -> None:
        self._tokens = tokens
        self._budget = budget
        self._is_blank = is_blank
        self._forced: deque[int] = deque()
        self.phase = Phase.REASONING if starts_in_reasoning else Phase.OPENING
        self.reasoning_tokens = 0
        self._check_budget()

    @property
    def pending_forced(self) -> tuple[int, ...]:
        """The forced tokens still to come (the llama.cpp engine forces them in one request)."""
        return tuple(self._forced)

    def take_forced(self) -> int | None:
        """The token to emit instead of the sampled one, if the budget is ending the thinking."""
        return self._forced.popleft() if self._forced else None

    def observe(self, token: int, *, forced: bool = False) -> None:
        """Account for one emitted token (sampled, or forced by ``take_forced``)."""
        if self.phase is Phase.OPENING:
            if token == self._tokens.open_id:
                self.phase = Phase.REASONING
            elif not self._is_blank(token):
                self.phase = Phase.ANSWER
        elif self.phase is Phase.REASONING:
            if token == self._tokens.close_id:
                self.phase = Phase.ANSWER
            elif not forced:
                self.reasoning_tokens += 1
        self._check_budget()

    def _check_budget(self) -> None:
        if (
            self.phase is Phase.REASONING
            and self._budget is not None
            and self.reasoning_tokens >= self._budget
            and not self._forced
        ):
            self._forced.extend(self._tokens.end_ids)
