"""User accounts: create, list, change password, role and disabled flag; the first admin."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from r1serve.auth.passwords import Passwords, check_new_password, generate_password
from r1serve.auth.principal import QuotaLimits, Role, UserInfo
from r1serve.errors import ConfigError, NotFoundError, RequestError
from r1serve.storage import Database
from r1serve.storage.models import ROLES, User
from r1serve.storage.repositories import QuotaRepository, SessionRepository, UserRepository

log = logging.getLogger(__name__)

FIRST_ADMIN_NAME = "admin"
MAX_USERNAME_CHARS = 64
_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,63}")


def normalize_username(raw: str) -> str:
    """The stored form of a user name (lower case); raises for names we do not accept."""
    if len(raw) > MAX_USERNAME_CHARS:
        raise RequestError(
            f"user name is longer than {MAX_USERNAME_CHARS} characters", param="username"
        )
    name = raw.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise RequestError(
            "user names are 1 to 64 characters: letters, digits and _ . @ -, "
            "starting with a letter or digit",
            param="username",
        )
    return name


def check_role(role: str) -> Role:
    """Validate a role name."""
    if role == "admin":
        return "admin"
    if role == "user":
        return "user"
    raise RequestError(f"role must be one of {', '.join(ROLES)}, got {role!r}", param="role")


class UserService:
    """User accounts. Changing a password, role or disabled flag ends the user's web sessions."""

    def __init__(
        self, database: Database, passwords: Passwords, clock: Callable[[], datetime]
    ) -> None:
        self.database = database
        self.passwords = passwords
        self.clock = clock

    def create(self, username: str, password: str, role: str = "user") -> UserInfo:
        """Add a user; the name must be free."""
        name = normalize_username(username)
        checked_role = check_role(role)
        check_new_password(password)
        password_hash = self.passwords.hash(password)  # outside the transaction: it is slow
        try:
            with self.database.write() as session:
                user = UserRepository(session).add(name, password_hash, checked_role)
                return UserInfo.of(user, QuotaLimits())
        except IntegrityError:
            raise RequestError(f"user {name!r} already exists", param="username") from None

    def get(self, user_id: int) -> UserInfo:
        """One user by id."""
        with self.database.read() as session:
            return self._info(session, self._user(session, user_id))

    def by_name(self, username: str) -> UserInfo:
        """One user by name."""
        name = normalize_username(username)
        with self.database.read() as session:
            user = UserRepository(session).by_username(name)
            if user is None:
                raise NotFoundError(f"no user named {name!r}", param="username")
            return self._info(session, user)

    def list(self) -> list[UserInfo]:
        """Every user, by name."""
        with self.database.read() as session:
            users = UserRepository(session).list()
            quotas = QuotaRepository(session).for_users([user.id for user in users])
            return [
                UserInfo.of(
                    user,
                    QuotaLimits(quotas[user.id].requests_per_minute, quotas[user.id].tokens_per_day)
                    if user.id in quotas
                    else QuotaLimits(),
                )
                for user in users
            ]

    def set_password(self, user_id: int, new_password: str) -> None:
        """Replace the password and end every web session of the user."""
        check_new_password(new_password)
        password_hash = self.passwords.hash(new_password)
        with self.database.write() as session:
            user = self._user(session, user_id)
            UserRepository(session).set_password_hash(user, password_hash, at=self.clock())
            SessionRepository(session).delete_for_user(user.id)

    def set_role(self, user_id: int, role: str) -> UserInfo:
        """Make the user an admin or a plain user; ends their web sessions when it changes."""
        checked_role = check_role(role)
        with self.database.write() as session:
            user = self._user(session, user_id)
            if user.role == checked_role:
                return self._info(session, user)
            if checked_role == "user":
                self._keep_an_admin(session, user, "demote")
            UserRepository(session).set_role(user, checked_role)
            SessionRepository(session).delete_for_user(user.id)
            return self._info(session, user)

    def set_disabled(self, user_id: int, disabled: bool) -> UserInfo:
        """Disable (no logins, no keys; sessions end) or enable a user."""
        with self.database.write() as session:
            user = self._user(session, user_id)
            if disabled and not user.disabled:
                self._keep_an_admin(session, user, "disable")
                SessionRepository(session).delete_for_user(user.id)
            UserRepository(session).set_disabled(user, disabled)
            return self._info(session, user)

    def ensure_admin(self, password: str | None) -> str | None:
        """Without any admin, create ``admin``; returns its password if we generated it."""
        with self.database.read() as session:
            users = UserRepository(session)
            if users.count_admins() > 0:
                return None
            if users.by_username(FIRST_ADMIN_NAME) is not None:
                raise ConfigError(
                    f"there is no admin account and the name {FIRST_ADMIN_NAME!r} is taken by a "
                    f"plain user; make someone admin with `r1serve users role NAME admin`"
                )
        generated = password is None
        chosen = generate_password() if password is None else password
        try:
            self.create(FIRST_ADMIN_NAME, chosen, "admin")
        except RequestError as exc:
            if exc.message.endswith("already exists"):  # another replica created it first
                return None
            raise ConfigError(f"R1SERVE_ADMIN_PASSWORD is not usable: {exc.message}") from None
        log.info("created the first admin account %r", FIRST_ADMIN_NAME)
        return chosen if generated else None

    def _user(self, session: Session, user_id: int) -> User:
        user = UserRepository(session).get(user_id)
        if user is None:
            raise NotFoundError(f"no user with id {user_id}", param="user_id")
        return user

    def _info(self, session: Session, user: User) -> UserInfo:
        quota = QuotaRepository(session).for_user(user.id)
        limits = (
            QuotaLimits(quota.requests_per_minute, quota.tokens_per_day) if quota else QuotaLimits()
        )
        return UserInfo.of(user, limits)

    def _keep_an_admin(self, session: Session, user: User, action: str) -> None:
        is_enabled_admin = user.role == "admin" and not user.disabled
        if is_enabled_admin and UserRepository(session).count_enabled_admins() <= 1:
            raise RequestError(f"cannot {action} {user.username!r}: it is the last enabled admin")
