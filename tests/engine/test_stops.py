"""StopMatcher: streamed text is cut at the first stop string, whatever the chunking."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from r1serve.engine.text.stops import StopMatcher, StopResult


def cut_at_first_stop(text: str, stops: list[str]) -> str:
    """Reference: the text before the lowest-starting stop string."""
    starts = [text.find(stop) for stop in stops if stop in text]
    return text[: min(starts)] if starts else text


def run_stream(stops: list[str], chunks: list[str]) -> tuple[list[str], StopMatcher]:
    matcher = StopMatcher(stops)
    emitted = []
    for chunk in chunks:
        result = matcher.feed(chunk)
        emitted.append(result.text)
        if result.stopped:
            break
    else:
        emitted.append(matcher.flush())
    return emitted, matcher


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(cut, len(text)) for cut in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


ALPHABET = "ab\n<>中😀"
stop_lists = st.lists(st.text(ALPHABET, min_size=1, max_size=4), min_size=1, max_size=4)


@given(
    text=st.text(ALPHABET, max_size=40),
    stops=stop_lists,
    cuts=st.lists(st.integers(0, 40), max_size=12),
)
@example(text="abx", stops=["abc", "b"], cuts=[2])
@example(text="abc", stops=["abc", "b"], cuts=[1, 2])
def test_any_chunking_emits_text_cut_at_first_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    emitted, matcher = run_stream(stops, split(text, cuts))
    joined = "".join(emitted)
    expected = cut_at_first_stop(text, stops)
    assert joined == expected
    assert not any(stop in joined for stop in stops)
    assert matcher.stopped == any(stop in text for stop in stops)
    if matcher.stopped:
        assert matcher.matched is not None
        assert text[len(expected) :].startswith(matcher.matched)


@given(text=st.text(max_size=60), stops=st.lists(st.text(min_size=1, max_size=6), max_size=3))
def test_arbitrary_unicode_one_char_at_a_time(text: str, stops: list[str]) -> None:
    emitted, _ = run_stream(stops, list(text))
    assert "".join(emitted) == cut_at_first_stop(text, stops)


def test_holds_back_possible_stop_prefix_until_decided() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("hello ST") == StopResult("hello ")
    assert matcher.feed("ORY") == StopResult("STORY")
    assert matcher.feed(" and ST") == StopResult(" and ")
    assert matcher.feed("OP here") == StopResult("", True, "STOP")


def test_stop_split_over_many_chunks_is_never_emitted() -> None:
    matcher = StopMatcher(["</answer>"])
    results = [matcher.feed(c) for c in ["42<", "/ans", "wer", ">tail"]]
    assert [r.text for r in results] == ["42", "", "", ""]
    assert results[-1].stopped and results[-1].matched == "</answer>"


def test_earliest_match_wins_and_shorter_on_same_start() -> None:
    assert StopMatcher(["c", "b"]).feed("abc") == StopResult("a", True, "b")
    assert StopMatcher(["abc", "ab"]).feed("xabc") == StopResult("x", True, "ab")


def test_waits_when_an_earlier_longer_stop_may_still_complete() -> None:
    matcher = StopMatcher(["abc", "b"])
    assert matcher.feed("xab") == StopResult("x")
    assert matcher.feed("c") == StopResult("", True, "abc")

    matcher = StopMatcher(["abc", "b"])
    matcher.feed("xab")
    assert matcher.feed("d") == StopResult("a", True, "b")


def test_flush_releases_tail_or_resolves_pending_match() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("end ST").text == "end "
    assert matcher.flush() == "ST"
    assert not matcher.stopped

    matcher = StopMatcher(["abc", "b"])
    assert matcher.feed("xab").text == "x"
    assert matcher.flush() == "a"
    assert matcher.stopped and matcher.matched == "b"


def test_after_stop_everything_is_swallowed() -> None:
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("line\n\nmore").stopped
    assert matcher.feed("more text") == StopResult("", True, "\n\n")
    assert matcher.flush() == ""


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("anything") == StopResult("anything")
    assert matcher.flush() == ""


def test_multibyte_stop_strings() -> None:
    matcher = StopMatcher(["。", "😀😀"])
    assert matcher.feed("你好😀").text == "你好"
    assert matcher.feed("😀世界") == StopResult("", True, "😀😀")


def test_empty_stop_string_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        StopMatcher(["ok", ""])


def test_single_string_rejected() -> None:
    with pytest.raises(TypeError):
        StopMatcher("stop")  # type: ignore[arg-type]


def test_work_does_not_grow_with_output_length() -> None:
    matcher = StopMatcher(["never-appears"])
    for _ in range(2000):
        matcher.feed("some text never")
    # Only a possible prefix of the stop string is ever held back.
    assert len(matcher._pending) < len("never-appears")
