"""``revocable``: a revoked lease ends its stream at once, with its error, and nothing else.

It adds nothing per item but a flag check (no task and no ``asyncio.wait`` per token, issue
#9); a stream waiting for its next item is ended by cancelling that wait in the consumer's own
task. These cases pin down what that must not break: the cancel is taken back (the task is not
left cancelling), an outside cancellation stays a cancellation, an item source that swallows
the cancel still ends, and the items are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from r1serve.api.access import AccessWatch, Lease, revocable
from r1serve.auth import Principal
from r1serve.errors import AccessRevokedError

ADA = Principal(user_id=1, username="ada", role="user", method="api_key")


def _lease() -> Lease:
    return AccessWatch(lambda principal: None, interval_s=60).lease(ADA)


class Source:
    """Items 0, 1, ... then a wait that never ends (``blocking``), recording how it ended."""

    def __init__(self, ready: int = 1, *, swallow: bool = False) -> None:
        self.ready = ready
        self.swallow = swallow
        self.waiting = asyncio.Event()
        self.closed = False
        self.cancelled = False

    async def items(self) -> AsyncIterator[int]:
        try:
            for i in range(self.ready):
                yield i
            self.waiting.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                if not self.swallow:
                    raise
            yield -1  # only after a swallowed cancel
        finally:
            self.closed = True


def test_a_waiting_stream_ends_at_once_with_the_error_and_its_items_closed() -> None:
    async def main() -> None:
        source, lease = Source(), _lease()
        items = revocable(source.items(), lease)
        assert await anext(items) == 0

        async def consume() -> None:
            with pytest.raises(AccessRevokedError, match="key revoked"):
                await anext(items)

        task = asyncio.create_task(consume())
        await source.waiting.wait()
        lease.revoke("key revoked")
        await asyncio.wait_for(task, 5)
        assert source.cancelled and source.closed
        assert task.cancelling() == 0  # the cancel that cut the wait was taken back
        assert lease.reason == "key revoked"

    asyncio.run(main())


def test_a_busy_stream_ends_at_its_next_item() -> None:
    async def main() -> None:
        source, lease = Source(ready=10), _lease()
        items = revocable(source.items(), lease)
        assert await anext(items) == 0
        lease.revoke("user disabled")
        with pytest.raises(AccessRevokedError, match="user disabled"):
            await anext(items)
        assert source.closed and not source.cancelled

    asyncio.run(main())


def test_an_outside_cancellation_with_the_revocation_stays_a_cancellation() -> None:
    async def main() -> None:
        source, lease = Source(), _lease()
        items = revocable(source.items(), lease)
        assert await anext(items) == 0
        task = asyncio.create_task(anext(items))
        await source.waiting.wait()
        task.cancel()  # the client went away ...
        lease.revoke("key revoked")  # ... as the key was revoked
        with pytest.raises(asyncio.CancelledError):
            await task
        assert source.closed

    asyncio.run(main())


def test_a_source_that_swallows_the_cancel_still_ends_with_the_error() -> None:
    async def main() -> None:
        source, lease = Source(swallow=True), _lease()
        items = revocable(source.items(), lease)
        assert await anext(items) == 0

        async def consume() -> None:
            with pytest.raises(AccessRevokedError):
                await anext(items)
            await asyncio.sleep(0)  # not cancelled afterwards: the cancel was taken back

        task = asyncio.create_task(consume())
        await source.waiting.wait()
        lease.revoke("logged out")
        await asyncio.wait_for(task, 5)
        assert source.cancelled and source.closed
        assert task.cancelling() == 0

    asyncio.run(main())


def test_a_revocation_from_inside_the_consuming_task_does_not_cancel_it() -> None:
    async def main() -> None:
        lease = _lease()

        async def source() -> AsyncIterator[int]:
            yield 0
            lease.revoke("demoted")  # the consumer's own task, running, not waiting
            await asyncio.sleep(0)
            yield 1

        items = revocable(source(), lease)
        assert await anext(items) == 0
        assert await anext(items) == 1  # already on its way
        with pytest.raises(AccessRevokedError, match="demoted"):
            await anext(items)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_lease_revoked_before_the_stream_starts_ends_it_before_any_item() -> None:
    async def main() -> None:
        source, lease = Source(ready=3), _lease()
        lease.revoke("key revoked")
        items = revocable(source.items(), lease)
        with pytest.raises(AccessRevokedError):
            await anext(items)

    asyncio.run(main())


def test_callbacks_run_once_and_not_after_removal() -> None:
    lease = _lease()
    calls: list[str] = []
    lease.add_callback(lambda: calls.append("a"))
    removed = lambda: calls.append("b")  # noqa: E731
    lease.add_callback(removed)
    lease.remove_callback(removed)
    lease.revoke("x")
    lease.revoke("y")
    lease.add_callback(lambda: calls.append("late"))  # already revoked: at once
    assert calls == ["a", "late"]
    assert lease.reason == "x"
