"""The thinking tracker: phases, reasoning counts and the forced end of a budget."""

from __future__ import annotations

from r1serve.engine.fake import FakeTokenizer
from r1serve.engine.text.thinking import (
    Phase,
    ThinkingTokens,
    ThinkingTracker,
    prompt_opens_thinking,
    thinking_tokens,
)

OPEN, CLOSE, NL = 259, 260, 10
TAGS = ThinkingTokens(OPEN, CLOSE, (NL, CLOSE, NL, NL))


def blank(token: int) -> bool:
    return token == NL


def run(tracker: ThinkingTracker, sampled: list[int]) -> list[int]:
    """Emit tokens as the scheduler does: a forced one replaces what was sampled."""
    out = []
    for token in sampled:
        forced = tracker.take_forced()
        if forced is not None:
            tracker.observe(forced, forced=True)
            out.append(forced)
        else:
            tracker.observe(token)
            out.append(token)
    return out


def test_tags_from_a_tokenizer() -> None:
    assert thinking_tokens(FakeTokenizer()) == TAGS


def test_prompt_opening_thinking() -> None:
    assert prompt_opens_thinking([1, OPEN, NL], TAGS, blank)
    assert not prompt_opens_thinking([1, OPEN, NL, CLOSE, NL, NL], TAGS, blank)
    assert not prompt_opens_thinking([1, 2], TAGS, blank)


def test_counts_reasoning_between_the_tags() -> None:
    tracker = ThinkingTracker(TAGS, starts_in_reasoning=False, budget=None, is_blank=blank)
    run(tracker, [NL, OPEN, 1, 2, 3, CLOSE, 4, 5])
    assert tracker.reasoning_tokens == 3
    assert tracker.phase is Phase.ANSWER


def test_output_without_thinking_counts_nothing() -> None:
    tracker = ThinkingTracker(TAGS, starts_in_reasoning=False, budget=2, is_blank=blank)
    assert run(tracker, [1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]
    assert tracker.reasoning_tokens == 0


def test_budget_forces_the_end_of_thinking() -> None:
    tracker = ThinkingTracker(TAGS, starts_in_reasoning=True, budget=3, is_blank=blank)
    out = run(tracker, [1, 2, 3, 7, 7, 7, 7, 4, 5])
    assert out == [1, 2, 3, NL, CLOSE, NL, NL, 4, 5]
    assert tracker.reasoning_tokens == 3
    assert tracker.phase is Phase.ANSWER


def test_budget_zero_after_a_generated_open_tag() -> None:
    tracker = ThinkingTracker(TAGS, starts_in_reasoning=False, budget=0, is_blank=blank)
    out = run(tracker, [OPEN, 1, 1, 1, 1, 4])
    assert out == [OPEN, NL, CLOSE, NL, NL, 4]
    assert tracker.reasoning_tokens == 0


def test_a_model_that_closes_early_is_not_forced() -> None:
    tracker = ThinkingTracker(TAGS, starts_in_reasoning=True, budget=5, is_blank=blank)
    assert run(tracker, [1, CLOSE, 2, 3, 4, 5, 6, 7]) == [1, CLOSE, 2, 3, 4, 5, 6, 7]
    assert tracker.reasoning_tokens == 1
