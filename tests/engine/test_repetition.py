"""The repetition guard: loops end a reply, ordinary text never does."""

from __future__ import annotations

import pytest

from r1serve.engine.text.repetition import (
    MIN_CHARS,
    RepetitionGuard,
    find_repetition,
    required_repeats,
)

PARAGRAPH = "Wait, let me check the sum again: 2 + 2 is 4, so the answer is 4. "  # 66 chars


def test_thresholds() -> None:
    assert required_repeats(1) == MIN_CHARS
    assert required_repeats(20) == 20
    assert required_repeats(100) == 4
    assert required_repeats(500) == 4


@pytest.mark.parametrize(
    ("span", "copies"), [("a", 400), ("ha ", 134), (PARAGRAPH, 7), ("x" * 300 + "\n", 4)]
)
def test_loops_are_found(span: str, copies: int) -> None:
    found = find_repetition("Some intro text. " + span * copies)
    assert found is not None and found.repeats >= required_repeats(len(found.span))
    assert (found.span * found.repeats).endswith(found.span)


@pytest.mark.parametrize(
    ("span", "copies"), [("a", 399), ("ha ", 100), (PARAGRAPH, 6), ("x" * 300 + "\n", 3)]
)
def test_short_of_the_threshold_is_not_a_loop(span: str, copies: int) -> None:
    assert find_repetition("Some intro text. " + span * copies) is None


def test_ordinary_text_is_not_a_loop() -> None:
    table = "| a | b |\n|---|---|\n" + "".join(f"| {i} | {i * i} |\n" for i in range(200))
    counting = " ".join(str(i) for i in range(500))
    code = "\n".join(f"    x{i} = compute({i})" for i in range(100))
    for text in (table, counting, code):
        assert find_repetition(text) is None


def test_guard_over_a_stream_in_awkward_pieces() -> None:
    guard = RepetitionGuard()
    text = "Let me think. " + PARAGRAPH * 10
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    tripped = [i for i, piece in enumerate(pieces) if guard.feed(piece)]
    assert tripped, "the loop was not found"
    seen = "".join(pieces[: tripped[0] + 1])
    assert seen.count(PARAGRAPH) <= 7  # found soon after the threshold, not at the end
    assert guard.found is not None and guard.found.span.strip()
