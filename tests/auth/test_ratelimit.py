"""The sliding-window estimate behind quotas and login throttling."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from r1serve.auth.ratelimit import SlidingWindow


def test_fixed_windows_are_aligned() -> None:
    assert SlidingWindow(5, 60).starts(125.0) == (60, 120)


def test_previous_window_weighs_by_overlap() -> None:
    window = SlidingWindow(10, 60)
    assert window.estimate(previous=10, current=2, now=120.0) == 12
    assert window.estimate(previous=10, current=2, now=150.0) == 7
    assert window.allows(previous=10, current=2, now=150.0)
    assert not window.allows(previous=10, current=2, now=121.0)


def test_full_current_window_waits_into_the_next() -> None:
    window = SlidingWindow(2, 60)
    # 2 of 2 used at second 19: 41 s to the next window, then half of it for 2*(1-u/60)+1 <= 2.
    assert window.wait_s(previous=0, current=2, now=19.0) == 71.0
    assert window.retry_after(previous=0, current=2, now=19.0) == 71


def test_retry_after_is_at_least_one_second() -> None:
    window = SlidingWindow(10, 60)
    assert window.retry_after(previous=10, current=0, now=60.0 + 5.99) >= 1


@given(
    limit=st.integers(1, 50),
    window_s=st.sampled_from([1, 60, 900]),
    previous=st.integers(0, 100),
    current=st.integers(0, 100),
    offset=st.floats(0, 0.999),
)
def test_waiting_the_advised_time_is_enough_and_not_much_more(
    limit: int, window_s: int, previous: int, current: int, offset: float
) -> None:
    window = SlidingWindow(limit, window_s)
    now = 10 * window_s + offset * window_s
    wait = window.wait_s(previous, current, now)
    assert wait >= 0

    def allowed_at(moment: float) -> bool:
        # Counts shift down one window when the moment crosses into the next one.
        shift = int(moment // window_s) - int(now // window_s)
        prev, cur = {0: (previous, current), 1: (current, 0)}.get(shift, (0, 0))
        return window.allows(prev, cur, moment)

    assert allowed_at(now + wait + 1e-6)
    if wait > 0.01:
        assert not allowed_at(now + wait - 0.01)
