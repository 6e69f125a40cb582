"""Work that outlives one request check: streams and stored replies end when access does.

A running stream or a stored reply holds a ``Lease`` on the caller who started it. One
``AccessWatch`` task re-checks every distinct caller with a live lease every
``auth_recheck_s`` seconds (one database read per caller, off the event loop) and revokes the
leases of callers whose key was revoked, whose session ended, or whose account was disabled or
changed role. ``revocable`` ends an async iterator with ``AccessRevokedError`` as soon as its
lease is revoked, so every stream can send a well-formed error event and its end marker
instead of being cut, and the engine request behind it is aborted. The server's shutdown ends
every lease, local mode's included (``AccessWatch.end_all``), the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio

from r1serve.auth import Principal
from r1serve.errors import AccessRevokedError, R1ServeError

log = logging.getLogger("r1serve.api")

T = TypeVar("T")
AccessCheck = Callable[[Principal], str | None]  # why access ended, None while it stands


class Lease:
    """One piece of work's hold on its caller's access."""

    def __init__(self, watch: AccessWatch | None, principal: Principal) -> None:
        self.principal = principal
        self.reason: str | None = None
        self._error: R1ServeError | None = None
        self._watch = watch
        self._revoked = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def revoked(self) -> bool:
        return self._revoked

    def revoke(self, reason: str) -> None:
        """End the lease (on the event loop); its callbacks run now, once."""
        if not self._revoked:
            self.reason = reason
            self._revoked = True
            callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the lease is revoked (at once if it already is)."""
        if self._revoked:
            callback()
        else:
            self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def end(self, error: R1ServeError) -> None:
        """End the work for another reason than access: it fails with ``error``."""
        if not self._revoked:
            self._error = error
        self.revoke(error.message)

    def error(self) -> R1ServeError:
        if self._error is not None:
            return self._error
        return AccessRevokedError(f"access ended: {self.reason or 'revoked'}")

    def release(self) -> None:
        if self._watch is not None:
            self._watch.forget(self)
            self._watch = None


class AccessWatch:
    """Re-checks the callers behind live leases every ``interval_s`` seconds."""

    def __init__(self, check: AccessCheck, interval_s: float) -> None:
        self._check = check
        self.interval_s = interval_s
        self._leases: set[Lease] = set()
        self._unchecked: set[Lease] = set()  # local mode's: only the shutdown ends them
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def lease(self, principal: Principal) -> Lease:
        """A lease on ``principal``'s access; release it when the work ends."""
        lease = Lease(self, principal)
        if principal.method == "local":  # local mode has nothing to re-check
            self._unchecked.add(lease)
            return lease
        self._leases.add(lease)
        self._wake.set()
        return lease

    def forget(self, lease: Lease) -> None:
        self._leases.discard(lease)
        self._unchecked.discard(lease)

    def end_all(self, error: R1ServeError) -> int:
        """End every live lease with ``error`` (the server's shutdown); how many there were."""
        leases = [*self._leases, *self._unchecked]
        for lease in leases:
            lease.end(error)
            self.forget(lease)
        return len(leases)

    @property
    def watched(self) -> int:
        return len(self._leases)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="access-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check_now(self) -> None:
        """One round of checks over every watched caller."""
        principals = {lease.principal for lease in self._leases}
        if not principals:
            return
        problems = await anyio.to_thread.run_sync(lambda: {p: self._check(p) for p in principals})
        for lease in list(self._leases):
            reason = problems.get(lease.principal)
            if reason is not None:
                log.info("ending work of %r: %s", lease.principal.username, reason)
                lease.revoke(reason)
                self.forget(lease)

    async def _run(self) -> None:
        while True:
            if not self._leases:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_now()
            except Exception as exc:  # the database may be briefly away: check again later
                log.warning("re-checking callers failed: %s", exc)


class _Wait:
    """The task waiting for ``revocable``'s next item, and whether a revocation cut it short."""

    __slots__ = ("interrupted", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.interrupted = False

    def interrupt(self) -> None:
        task = self.task
        # Never the running task itself (it is not waiting): its next check ends it.
        if task is not None and not self.interrupted and task is not asyncio.current_task():
            self.interrupted = True
            task.cancel()


async def revocable(items: AsyncIterator[T], lease: Lease) -> AsyncIterator[T]:
    """``items`` until the lease is revoked, then the lease's error; closing closes ``items``.

    Nothing is added per item but a flag check: while the consumer waits for the next item
    (queued, or a slow model), a revocation cancels that wait in the consumer's own task (and
    only that wait), so a waiting stream still ends at once; a busy one ends at its next item.
    """
    wait = _Wait()
    lease.add_callback(wait.interrupt)
    try:
        while True:
            if lease.revoked:  # also when items are ready: a busy stream must end too
                raise lease.error()
            task = wait.task = asyncio.current_task()
            assert task is not None
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if wait.interrupted and task.uncancel() == 0:
                    raise lease.error() from None  # our cancel alone: the revocation
                raise
            finally:
                wait.task = None
            if wait.interrupted:  # the wait swallowed our cancel: take it back, then end
                task.uncancel()
                raise lease.error()
            yield item
    finally:
        lease.remove_callback(wait.interrupt)
        lease.release()
        close = getattr(items, "aclose", None)
        if close is not None:
            with contextlib.suppress(RuntimeError):
                await close()
