"""Prompts from stored branches: system first, no reasoning, oldest turns dropped to fit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from r1serve.conversations import MessageRecord, Siblings, build_history_prompt, reply_reserve
from r1serve.conversations.prompting import group_turns
from r1serve.engine.fake import FakeEngine
from r1serve.errors import ContextLengthError

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _message(role: str, content: str, reasoning: str = "") -> MessageRecord:
    return MessageRecord(
        id=content[:8],
        conversation_id="c",
        parent_id=None,
        role=role,  # type: ignore[arg-type]
        content=content,
        reasoning=reasoning,
        status="complete",
        finish_reason="stop",
        error=None,
        prompt_tokens=None,
        completion_tokens=None,
        reasoning_seconds=None,
        dropped_turns=0,
        created_at=NOW,
        finished_at=NOW,
        siblings=Siblings(0, (content[:8],)),
    )


def _history(turns: int, size: int = 40) -> list[MessageRecord]:
    messages = []
    for i in range(turns):
        messages.append(_message("user", f"Q{i:02d} " + "q" * size))
        messages.append(_message("assistant", f"A{i:02d} " + "a" * size, reasoning=f"R{i:02d}"))
    return messages


def test_reserve_is_max_tokens_or_1024_but_at_most_half_the_context() -> None:
    assert reply_reserve(8192, None) == 1024
    assert reply_reserve(8192, 100) == 100
    assert reply_reserve(1000, None) == 500
    assert reply_reserve(1000, 900) == 500


def test_system_prompt_first_and_no_reasoning_fed_back() -> None:
    engine = FakeEngine()
    built = build_history_prompt(
        engine, system_prompt="Be brief.", history=_history(2), question="next?", max_tokens=None
    )
    text = built.prompt.text
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.index("Q00") < text.index("A00") < text.index("Q01") < text.index("next?")
    assert "R00" not in text and "R01" not in text
    assert built.dropped_turns == 0
    assert built.max_tokens == engine.context_length - len(built.prompt.token_ids)


def test_oldest_turns_are_dropped_to_fit() -> None:
    engine = FakeEngine(context_length=600, max_seq_len=600)
    history = _history(12)
    built = build_history_prompt(
        engine, system_prompt="SYS", history=history, question="LAST?", max_tokens=100
    )
    text = built.prompt.text
    assert built.dropped_turns > 0
    assert len(built.prompt.token_ids) <= 600 - 100
    assert "SYS" in text and "LAST?" in text
    kept = [f"Q{i:02d}" for i in range(12) if f"Q{i:02d}" in text]
    assert kept == [f"Q{i:02d}" for i in range(built.dropped_turns, 12)]
    # One more turn would not have fit.
    longer = engine.render_chat(
        [{"role": "system", "content": "SYS"}]
        + [{"role": m.role, "content": m.content} for m in history[2 * (built.dropped_turns - 1) :]]
        + [{"role": "user", "content": "LAST?"}]
    )
    assert len(longer.token_ids) > 500
    assert built.max_tokens == 100


def test_max_tokens_is_clamped_to_the_room_left() -> None:
    engine = FakeEngine(context_length=600, max_seq_len=600)
    built = build_history_prompt(
        engine, system_prompt="", history=_history(1), question="q", max_tokens=10_000
    )
    assert built.max_tokens == 600 - len(built.prompt.token_ids)


def test_a_message_that_cannot_fit_alone_is_refused_with_numbers() -> None:
    engine = FakeEngine(context_length=300, max_seq_len=300)
    with pytest.raises(ContextLengthError, match=r"take \d+ tokens, but the context is 300"):
        build_history_prompt(
            engine,
            system_prompt="S" * 100,
            history=_history(3),
            question="x" * 200,
            max_tokens=None,
        )


def test_turns_group_a_question_with_its_replies() -> None:
    messages = [
        _message("assistant", "orphan reply"),
        _message("user", "q1"),
        _message("assistant", "a1"),
        _message("user", "q2"),
    ]
    assert [[m["content"] for m in turn] for turn in group_turns(messages)] == [
        ["orphan reply"],
        ["q1", "a1"],
        ["q2"],
    ]
