"""Login throttling per account name and per client address, shared through the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from r1serve.auth.ratelimit import SlidingWindow
from r1serve.errors import RateLimitError
from r1serve.storage import Database
from r1serve.storage.repositories import RateCounterRepository

_MAX_SUBJECT_CHARS = 200


def _subject(kind: str, value: str) -> str:
    return f"login-{kind}:{value}"[:_MAX_SUBJECT_CHARS]


def _account(username: str, client_ip: str) -> str:
    # The address first: the name is what gets cut off at the length limit.
    return _subject("user", f"{client_ip}/{username}")


class LoginThrottle:
    """Counts failed logins; refuses attempts with 429 once a name or address has too many.

    The account counter is keyed by the submitted name (whether or not such a user exists, so
    throttling reveals nothing about which names are taken) and the client address: guessing
    from one address throttles that address, never the account's owner logging in elsewhere.
    The per-address counter, over all names, still bounds one address's guesses.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_per_account: int,
        max_per_address: int,
        window_s: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.database = database
        self.account_window = SlidingWindow(max_per_account, window_s)
        self.address_window = SlidingWindow(max_per_address, window_s)
        self.clock = clock

    def check(self, username: str, client_ip: str) -> None:
        """Raise ``RateLimitError`` if this name or this address must wait."""
        now = self.clock().timestamp()
        checks = (
            (_account(username, client_ip), self.account_window, "for this account"),
            (_subject("ip", client_ip), self.address_window, "from this address"),
        )
        with self.database.read() as session:
            counters = RateCounterRepository(session)
            for subject, window, where in checks:
                previous, current = counters.counts(subject, window.starts(now))
                if not window.allows(previous, current, now):
                    retry_after = window.retry_after(previous, current, now)
                    raise RateLimitError(
                        f"too many failed logins {where}; try again in {retry_after} seconds",
                        retry_after=retry_after,
                        code="login_throttled",
                    )

    def record_failure(self, username: str, client_ip: str) -> None:
        """Count one failed login against the name and the address."""
        now = self.clock().timestamp()
        with self.database.write() as session:
            counters = RateCounterRepository(session)
            counters.add(_account(username, client_ip), self.account_window.starts(now)[1])
            counters.add(_subject("ip", client_ip), self.address_window.starts(now)[1])

    def clear_account(self, username: str, client_ip: str) -> None:
        """Forget the name's failures from this address after a successful login."""
        with self.database.write() as session:
            RateCounterRepository(session).delete_subject(_account(username, client_ip))
