"""One request's state on the llama.cpp engine, across the llama.cpp requests ("legs") it takes.

Most requests are one leg. Two things r1serve does mid-generation need a new one, because
llama.cpp fixes a request's grammar when it starts:

- a thinking budget: at N reasoning tokens the leg stops, and a leg whose grammar is exactly
  the end-of-thinking tokens forces them (so they come with their log probabilities too);
- a constraint that applies only after R1's ``</think>``: the reasoning runs free, and once the
  output contains that text the next leg carries the grammar.

Each leg's prompt is the request's prompt and the output so far; llama.cpp's prompt cache finds
the slot that holds it, so a new leg evaluates only the tokens it has not seen. The detokenizer,
stop matcher and counts live here and carry over, so the stream cannot tell legs apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from r1serve.engine.grammar import forced_tokens_grammar
from r1serve.engine.protocol import (
    Delta,
    FinishReason,
    GenerationRequest,
    RequestTimings,
    Tokenizer,
    TokenLogprob,
)
from r1serve.engine.text.detokenize import IncrementalDetokenizer
from r1serve.engine.text.stops import StopMatcher
from r1serve.engine.text.thinking import ThinkingTokens, ThinkingTracker, prompt_opens_thinking

log = logging.getLogger("r1serve.llamacpp")


@dataclasses.dataclass(frozen=True, slots=True)
class Leg:
    """One llama.cpp request of a sequence."""

    prompt: list[int]
    max_tokens: int
    grammar: str | None


class RequestState:
    """One request from submit to finish; its text state lives on its worker thread."""

    __slots__ = (
        "_after",
        "_constraint_started",
        "_forcing",
        "_grammar",
        "_seen",
        "aborted",
        "constrained",
        "deadline",
        "detok",
        "finish_reason",
        "leg_over",
        "leg_tokens",
        "loop",
        "max_tokens",
        "output",
        "queue",
        "request",
        "stops",
        "thinking",
        "timings",
        "unsent",
        "unsent_logprobs",
    )

    def __init__(
        self,
        request: GenerationRequest,
        max_tokens: int,
        tokenizer: Tokenizer,
        *,
        thinking: ThinkingTokens | None = None,
        grammar: str | None = None,
    ) -> None:
        now = time.monotonic()
        self.request = request
        self.max_tokens = max_tokens
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Delta] = asyncio.Queue()
        self.output: list[int] = []
        self.unsent: list[int] = []
        self.unsent_logprobs: list[TokenLogprob] = []
        self.detok = IncrementalDetokenizer(tokenizer, request.prompt_token_ids)
        self.stops = StopMatcher(request.params.stop) if request.params.stop else None
        self.timings = RequestTimings(submitted=now)
        self.deadline = now + request.timeout_s if request.timeout_s else None
        self.finish_reason: FinishReason | None = None
        self.aborted = False
        self.leg_over = False  # the running leg ended for another to follow
        self.leg_tokens = 0  # tokens llama.cpp sampled in the running leg (held back ones too)
        self.thinking: ThinkingTracker | None = None
        if thinking is not None:

            def is_blank(token: int) -> bool:
                return not tokenizer.decode([token], skip_special_tokens=False).strip()

            self.thinking = ThinkingTracker(
                thinking,
                starts_in_reasoning=prompt_opens_thinking(
                    request.prompt_token_ids, thinking, is_blank
                ),
                budget=request.params.max_reasoning_tokens,
                is_blank=is_blank,
            )
        constraint = request.params.constraint
        self._grammar = grammar
        self._after = constraint.after if constraint is not None else None
        self.constrained = grammar is not None and self._after is None  # the grammar applies
        self._constraint_started = False
        self._forcing = False
        self._seen = ""

    @property
    def reasoning_tokens(self) -> int:
        return self.thinking.reasoning_tokens if self.thinking is not None else 0

    def send(self, delta: Delta) -> None:
        # A closed loop (shutdown) has nobody left to tell.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, delta)

    def next_leg(self) -> Leg:
        """The next llama.cpp request: forced end of thinking, constrained answer, or free."""
        prompt = [*self.request.prompt_token_ids, *self.output]
        room = self.max_tokens - len(self.output)
        forced = self.thinking.pending_forced if self.thinking is not None else ()
        self._forcing = bool(forced)
        self._constraint_started = False
        self.leg_over = False
        self.leg_tokens = 0
        if forced:
            return Leg(prompt, min(room, len(forced)), forced_tokens_grammar(forced))
        return Leg(prompt, room, self._grammar if self.constrained else None)

    def observe(self, token: int, logprob: TokenLogprob | None) -> tuple[int, TokenLogprob | None]:
        """Count a sampled token for the thinking budget; while forcing, the forced one."""
        if self.thinking is None:
            return token, logprob
        if self._forcing:
            expected = self.thinking.take_forced()
            if expected is not None:
                if expected != token:  # the leg's grammar allows nothing else
                    log.warning("forced token %d, llama.cpp sampled %d", expected, token)
                    token = expected
                    if logprob is not None:
                        logprob = dataclasses.replace(logprob, token_id=expected)
                self.thinking.observe(token, forced=True)
                return token, logprob
        self.thinking.observe(token)
        return token, logprob

    def watch(self, text: str) -> None:
        """Follow the output text for the one that starts the constraint (``</think>``)."""
        if self._grammar is None or self.constrained or self._after is None:
            return
        self._seen = (self._seen + text)[-(len(self._after) + len(text)) :]
        if self._after in self._seen:
            self.constrained = True
            self._constraint_started = True

    def ends_leg(self) -> bool:
        """Whether the next token needs a new leg (a budget ran out, forcing or a constraint
        begins, or the forced tokens are out)."""
        pending = self.thinking is not None and bool(self.thinking.pending_forced)
        if self._forcing:
            return not pending
        return pending or self._constraint_started
