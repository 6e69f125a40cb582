"""Reading usage back for the "my usage" and admin views."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from r1serve.auth import AuthService, Principal, UsageEvent
from r1serve.errors import RequestError

from .conftest import FakeClock


def test_report_of_one_user_and_of_everyone(
    auth: AuthService, make_user: Callable[..., Principal], clock: FakeClock
) -> None:
    ada, bob = make_user("ada"), make_user("bob")
    old = clock() - timedelta(days=40)
    for who, at, tokens in ((ada, old, 99), (ada, clock(), 10), (bob, clock(), 5)):
        auth.usage.record(
            UsageEvent(who.user_id, None, "tiny", "/generate", tokens, 1, 3, "stop", at)
        )
    auth.usage.flush()
    mine = auth.reports.report(user_id=ada.user_id, days=30)
    assert (mine.totals.requests, mine.totals.prompt_tokens) == (1, 10)
    assert [(d.model, d.requests) for d in mine.days] == [("tiny", 1)]
    assert [entry.prompt_tokens for entry in mine.recent] == [10, 99]  # recent is not windowed
    everyone = auth.reports.report(user_id=None, days=30, recent=0)
    assert everyone.totals.requests == 2 and everyone.recent == []
    assert everyone.since == clock().replace(hour=0, minute=0, second=0) - timedelta(days=29)


@pytest.mark.parametrize(("days", "recent"), [(0, 10), (367, 10), (30, -1), (30, 501)])
def test_report_bounds(auth: AuthService, days: int, recent: int) -> None:
    with pytest.raises(RequestError):
        auth.reports.report(user_id=None, days=days, recent=recent)
