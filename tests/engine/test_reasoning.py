"""ReasoningSplitter and split_reasoning: R1 ``<think>`` output into reasoning and content."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from r1serve.engine.text.reasoning import ReasoningDelta, ReasoningSplitter, split_reasoning
from support.models import TINY_ANSWER, TINY_RAW, TINY_REASONING


def stream(chunks: list[str], starts_in_reasoning: bool = False, **tags: str) -> tuple[str, str]:
    splitter = ReasoningSplitter(starts_in_reasoning, **tags)
    deltas = [splitter.feed(chunk) for chunk in chunks]
    deltas.append(splitter.finish())
    return "".join(d.reasoning for d in deltas), "".join(d.content for d in deltas)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(cut, len(text)) for cut in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


fragments = st.sampled_from(
    ["<think>", "</think>", "<", "</", "<th", "think", ">", " ", "\n", "\n\n", "a", "b c", "中文"]
)
outputs = st.lists(fragments, max_size=14).map("".join) | st.text(max_size=30)


@given(
    text=outputs,
    starts_in_reasoning=st.booleans(),
    cuts=st.lists(st.integers(0, 60), max_size=15),
)
@example(text=TINY_RAW, starts_in_reasoning=False, cuts=list(range(60)))
@example(text="a \n</thi", starts_in_reasoning=True, cuts=[3])
def test_streaming_equals_one_shot_for_any_chunking(
    text: str, starts_in_reasoning: bool, cuts: list[int]
) -> None:
    expected = split_reasoning(text, starts_in_reasoning)
    assert stream(split(text, cuts), starts_in_reasoning) == expected


@given(text=outputs, starts_in_reasoning=st.booleans())
def test_one_char_at_a_time(text: str, starts_in_reasoning: bool) -> None:
    assert stream(list(text), starts_in_reasoning) == split_reasoning(text, starts_in_reasoning)


@given(text=outputs, starts_in_reasoning=st.booleans())
def test_whitespace_rules_hold(text: str, starts_in_reasoning: bool) -> None:
    reasoning, content = split_reasoning(text, starts_in_reasoning)
    assert reasoning == reasoning.strip()
    assert content == content.lstrip()


def test_tiny_model_reply_splits() -> None:
    assert split_reasoning(TINY_RAW) == (TINY_REASONING, TINY_ANSWER)
    assert stream([TINY_RAW]) == (TINY_REASONING, TINY_ANSWER)


def test_tiny_model_reply_after_prefilled_think() -> None:
    # The newer template ends the prompt with "<think>\n"; the model continues after it.
    continuation = TINY_RAW.removeprefix("<think>\n")
    assert split_reasoning(continuation, starts_in_reasoning=True) == (
        TINY_REASONING,
        TINY_ANSWER,
    )
    assert stream(list(continuation), starts_in_reasoning=True) == (TINY_REASONING, TINY_ANSWER)


def test_token_sized_chunks_stream_reasoning_before_the_close_tag() -> None:
    splitter = ReasoningSplitter(False)
    assert splitter.feed("<think>") == ReasoningDelta()
    assert splitter.feed("\n") == ReasoningDelta()
    assert splitter.feed("Okay") == ReasoningDelta(reasoning="Okay")
    assert splitter.feed(",\n\n") == ReasoningDelta(reasoning=",")  # trailing \n\n held
    assert splitter.feed("so") == ReasoningDelta(reasoning="\n\nso")  # ...and was inner
    assert splitter.feed(" \n</th") == ReasoningDelta()
    assert splitter.feed("ink>\n\nHi") == ReasoningDelta(content="Hi")
    assert splitter.feed(" there ") == ReasoningDelta(content=" there ")
    assert splitter.finish() == ReasoningDelta()


def test_no_think_tag_is_all_content() -> None:
    assert split_reasoning("  Hello <think>x</think>") == ("", "Hello <think>x</think>")
    assert stream(["  Hel", "lo <think>x</think>"]) == ("", "Hello <think>x</think>")


def test_close_tag_without_open_is_content_unless_prefilled() -> None:
    assert split_reasoning("plan</think>answer") == ("", "plan</think>answer")
    assert split_reasoning("plan</think>answer", starts_in_reasoning=True) == ("plan", "answer")
    assert stream(["plan</th", "ink>answer"], True) == ("plan", "answer")


def test_unclosed_think_is_all_reasoning() -> None:
    assert split_reasoning("<think>\nstill thinking \n") == ("still thinking", "")
    assert stream(["<think>\nstill ", "thinking \n"]) == ("still thinking", "")
    assert split_reasoning("thinking </thi", starts_in_reasoning=True) == ("thinking </thi", "")
    assert stream(["thinking </thi"], starts_in_reasoning=True) == ("thinking </thi", "")


def test_partial_open_tag_at_end_is_content() -> None:
    assert split_reasoning(" <thi") == ("", "<thi")
    assert stream([" <th", "i"]) == ("", "<thi")


def test_leading_whitespace_before_open_tag() -> None:
    assert split_reasoning("\n\n<think>a</think>b") == ("a", "b")
    assert stream(["\n", "\n<", "think>a</think>b"]) == ("a", "b")


def test_empty_and_whitespace_only_output() -> None:
    for starts in (False, True):
        assert split_reasoning("", starts) == ("", "")
        assert split_reasoning(" \n\t ", starts) == ("", "")
        assert stream([], starts) == ("", "")
        assert stream([" \n", "\t "], starts) == ("", "")


def test_empty_reasoning_block() -> None:
    assert split_reasoning("<think>\n\n</think>\n\nAnswer") == ("", "Answer")
    assert stream(["<think>", "\n\n", "</think>", "\n\n", "Answer"]) == ("", "Answer")


def test_internal_whitespace_kept_exactly() -> None:
    text = "<think> a \n\n b\t</think>  x \n y \n"
    assert split_reasoning(text) == ("a \n\n b", "x \n y \n")
    assert stream(list(text)) == ("a \n\n b", "x \n y \n")


def test_only_first_close_tag_ends_reasoning() -> None:
    assert split_reasoning("<think>a</think>b</think>c") == ("a", "b</think>c")


def test_chinese_text() -> None:
    text = "<think>\n用户在打招呼。我应该回应。\n</think>\n\n你好！有什么可以帮你的吗？"
    expected = ("用户在打招呼。我应该回应。", "你好！有什么可以帮你的吗？")
    assert split_reasoning(text) == expected
    assert stream(list(text)) == expected


def test_custom_tags() -> None:
    text = "<reasoning>r</reasoning>c"
    tags = {"open_tag": "<reasoning>", "close_tag": "</reasoning>"}
    assert split_reasoning(text, **tags) == ("r", "c")
    assert stream(list(text), **tags) == ("r", "c")


@pytest.mark.parametrize("tag", ["", " <t>", "<t>\n"])
def test_bad_tags_rejected(tag: str) -> None:
    with pytest.raises(ValueError, match="open_tag"):
        ReasoningSplitter(False, open_tag=tag)


def test_long_whitespace_run_is_not_rescanned() -> None:
    splitter = ReasoningSplitter(True)
    splitter.feed("start")
    for _ in range(5000):
        assert splitter.feed("\n") == ReasoningDelta()
    assert splitter.feed("end") == ReasoningDelta(reasoning="\n" * 5000 + "end")
