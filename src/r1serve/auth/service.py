"""``AuthService``: accounts, sessions, keys, quotas and usage recording over one database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import argon2

from r1serve.auth.keys import ApiKeyService
from r1serve.auth.passwords import Passwords
from r1serve.auth.principal import Principal, QuotaLimits
from r1serve.auth.quotas import QuotaService
from r1serve.auth.sessions import SessionService
from r1serve.auth.throttle import LoginThrottle
from r1serve.auth.usage import UsageRecorder
from r1serve.auth.usage_reports import UsageReports
from r1serve.auth.users import FIRST_ADMIN_NAME, UserService, check_role
from r1serve.errors import AuthenticationError, ConfigError
from r1serve.settings import Settings
from r1serve.storage import Database, utcnow
from r1serve.storage.repositories import (
    ApiKeyRepository,
    RateCounterRepository,
    SessionRepository,
    UserRepository,
)

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 300.0


class AuthService:
    """Everything the HTTP layer and the CLI need for accounts; ``start``/``close`` around use."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        password_parameters: argon2.Parameters = argon2.profiles.RFC_9106_LOW_MEMORY,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock
        self.generated_admin_password: str | None = None
        self.passwords = Passwords(password_parameters)
        self.usage = UsageRecorder(
            database,
            flush_interval_s=settings.usage_flush_interval_s,
            periodic=[(HOUSEKEEPING_INTERVAL_S, self.housekeeping)],
        )
        self.users = UserService(database, self.passwords, clock)
        self.throttle = LoginThrottle(
            database,
            max_per_account=settings.login_max_failures_per_account,
            max_per_address=settings.login_max_failures_per_ip,
            window_s=settings.login_window_s,
            clock=clock,
        )
        self.sessions = SessionService(
            database, self.passwords, self.throttle, ttl_s=settings.session_ttl_s, clock=clock
        )
        self.keys = ApiKeyService(database, clock)
        self.reports = UsageReports(database, clock)
        self.quotas = QuotaService(
            database,
            self.usage,
            default=QuotaLimits(
                settings.default_requests_per_minute, settings.default_tokens_per_day
            ),
            clock=clock,
        )

    def start(self) -> str | None:
        """Create the first admin if there is no user; start the usage writer.

        Returns the admin's generated password (to print once), or None.
        """
        admin_password = self.settings.admin_password
        generated = self.users.ensure_admin(
            admin_password.get_secret_value() if admin_password is not None else None
        )
        if self.settings.auth:
            self.passwords.dummy_hash()  # now, so the first unknown-user login is not faster
        self.usage.start()
        self.generated_admin_password = generated
        return generated

    def close(self) -> None:
        """Store queued usage and stop the writer."""
        self.usage.close()

    def authenticate(self, *, session_token: str | None, api_key: str | None) -> Principal:
        """The caller behind a key (preferred when both are sent) or a session cookie."""
        if api_key is not None:
            return self.keys.authenticate(api_key)
        if session_token is not None:
            return self.sessions.authenticate(session_token)
        raise AuthenticationError(
            "authentication required: log in, or send an API key as 'Authorization: Bearer r1s-…' "
            "or 'X-API-Key: r1s-…'"
        )

    def still_valid(self, principal: Principal) -> bool:
        """Whether the caller's key or session still stands, with the same user and role."""
        return self.access_problem(principal) is None

    def access_problem(self, principal: Principal) -> str | None:
        """Why the caller's key or session no longer stands (None while it does)."""
        if principal.method == "local":
            return None
        now = self.clock()
        with self.database.read() as session:
            if principal.api_key_id is not None:
                found = ApiKeyRepository(session).by_id_with_user(principal.api_key_id)
                if found is None or found[0].revoked_at is not None:
                    return "the API key was revoked"
                key, user = found
                if key.expires_at and key.expires_at <= now:
                    return "the API key expired"
            elif principal.session_token_hash is not None:
                live = SessionRepository(session).live_with_user(principal.session_token_hash, now)
                if live is None:
                    return "the session ended (logged out or expired)"
                user = live[1]
            else:
                return "no key or session"
            if user.disabled:
                return "the account was disabled"
            if user.role != principal.role:
                return f"the account's role changed to {user.role!r}"
            return None

    def local_principal(self) -> Principal:
        """The caller in single-user local mode (--no-auth): the first enabled admin."""
        with self.database.read() as session:
            users = UserRepository(session)
            admin = users.by_username(FIRST_ADMIN_NAME)
            if admin is None or admin.disabled or admin.role != "admin":
                admin = next(
                    (u for u in users.list() if u.role == "admin" and not u.disabled), None
                )
            if admin is None:
                raise ConfigError("local mode needs an enabled admin account; none exists")
            return Principal(admin.id, admin.username, check_role(admin.role), "local")

    def housekeeping(self) -> None:
        """Delete expired sessions and stale rate counters."""
        sessions = self.sessions.prune_expired()
        longest_window = max(self.settings.login_window_s, 60)
        before = int(self.clock().timestamp()) - 2 * longest_window
        with self.database.write() as session:
            counters = RateCounterRepository(session).prune(before)
        log.debug("housekeeping: %d sessions, %d counters removed", sessions, counters)


def open_accounts(settings: Settings, **options: Any) -> AuthService:
    """Open (and migrate) the database from settings and start the account services.

    On a first start without ``R1SERVE_ADMIN_PASSWORD`` the generated admin password is in
    ``generated_admin_password``; whoever starts the server shows it once.
    """
    database = Database.open(settings)
    try:
        accounts = AuthService(settings, database, **options)
        accounts.start()
    except BaseException:
        database.close()
        raise
    return accounts


def close_accounts(accounts: AuthService) -> None:
    """Store queued usage, stop the writer and close the database."""
    try:
        accounts.close()
    finally:
        accounts.database.close()
