"""Web logins: server-side sessions behind an HttpOnly cookie, with a CSRF token each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from r1serve.auth.passwords import Passwords, check_new_password, check_password_length
from r1serve.auth.principal import Principal
from r1serve.auth.throttle import LoginThrottle
from r1serve.auth.tokens import csrf_token, new_session_token, same_secret, token_hash
from r1serve.auth.users import MAX_USERNAME_CHARS, check_role, normalize_username
from r1serve.errors import AuthenticationError, PermissionDeniedError, RequestError
from r1serve.storage import Database
from r1serve.storage.models import User
from r1serve.storage.repositories import SessionRepository, UserRepository

INVALID_LOGIN = "invalid user name or password"
MAX_SESSION_TOKEN_CHARS = 100


@dataclass(frozen=True, slots=True)
class Login:
    """A new web session: ``token`` goes into the cookie, ``csrf_token`` to the page."""

    token: str
    csrf_token: str
    expires_at: datetime
    principal: Principal


class SessionService:
    """Log in, resolve a session cookie, log out, change one's own password."""

    def __init__(
        self,
        database: Database,
        passwords: Passwords,
        throttle: LoginThrottle,
        *,
        ttl_s: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.database = database
        self.passwords = passwords
        self.throttle = throttle
        self.ttl = timedelta(seconds=ttl_s)
        self.clock = clock

    def login(self, username: str, password: str, client_ip: str) -> Login:
        """Check the password and open a new session; every failure looks the same."""
        if len(username) > MAX_USERNAME_CHARS:
            raise RequestError(
                f"user name is longer than {MAX_USERNAME_CHARS} characters", param="username"
            )
        check_password_length(password)
        try:
            name = normalize_username(username)
        except RequestError:
            name = username.strip().lower()  # counted and answered like an unknown user
        self.throttle.check(name, client_ip)
        with self.database.read() as session:
            user = UserRepository(session).by_username(name)
            stored_hash = user.password_hash if user is not None else None
        # Unknown users cost one argon2 verification too, so timing does not tell them apart.
        if stored_hash is None:
            self.passwords.verify_dummy(password)
            ok = False
        else:
            ok = self.passwords.verify(stored_hash, password)
        if not ok or user is None or stored_hash is None:
            self.throttle.record_failure(name, client_ip)
            raise AuthenticationError(INVALID_LOGIN)
        if user.disabled:
            # Only someone who knows the password learns this.
            raise PermissionDeniedError("this account is disabled; ask an admin")
        self.throttle.clear_account(name, client_ip)
        if self.passwords.needs_rehash(stored_hash):
            stored_hash = self._rehash(user.id, stored_hash, password)
        return self._open(user.id, expected_hash=stored_hash)

    def authenticate(self, token: str) -> Principal:
        """The user behind a session cookie; 401 when it is unknown, expired or the user is off."""
        if not token or len(token) > MAX_SESSION_TOKEN_CHARS:
            raise AuthenticationError("not logged in")
        hashed = token_hash(token)
        with self.database.read() as session:
            found = SessionRepository(session).live_with_user(hashed, self.clock())
            if found is None or found[1].disabled:
                raise AuthenticationError("your session has ended; log in again")
            return _principal(found[1], hashed)

    def csrf_token(self, token: str) -> str:
        """The CSRF token the page must echo on changes made with this session."""
        return csrf_token(token)

    def check_csrf(self, token: str, presented: str | None) -> None:
        """Raise 403 unless ``presented`` is this session's CSRF token."""
        if not presented or not same_secret(csrf_token(token), presented):
            raise PermissionDeniedError("missing or wrong CSRF token; reload the page")

    def logout(self, token: str) -> None:
        """End the session server-side."""
        if token and len(token) <= MAX_SESSION_TOKEN_CHARS:
            with self.database.write() as session:
                SessionRepository(session).delete_by_hash(token_hash(token))

    def change_password(
        self, principal: Principal, current_password: str, new_password: str
    ) -> Login | None:
        """Change one's own password; every session ends, a web caller gets a fresh one."""
        check_password_length(current_password, param="current_password")
        check_new_password(new_password, param="new_password")
        with self.database.read() as session:
            user = UserRepository(session).get(principal.user_id)
            stored_hash = user.password_hash if user is not None else None
        if stored_hash is None or not self.passwords.verify(stored_hash, current_password):
            raise PermissionDeniedError("the current password is wrong", param="current_password")
        new_hash = self.passwords.hash(new_password)
        with self.database.write() as session:
            found = UserRepository(session).get(principal.user_id)
            if found is None:
                raise AuthenticationError("your account no longer exists")
            UserRepository(session).set_password_hash(found, new_hash, at=self.clock())
            SessionRepository(session).delete_for_user(found.id)
        if principal.method != "session":
            return None
        return self._open(principal.user_id, expected_hash=new_hash)

    def prune_expired(self) -> int:
        """Delete expired sessions; returns how many."""
        with self.database.write() as session:
            return SessionRepository(session).delete_expired(self.clock())

    def _open(self, user_id: int, *, expected_hash: str) -> Login:
        token = new_session_token()
        expires_at = self.clock() + self.ttl
        with self.database.write() as session:
            user = UserRepository(session).get(user_id)
            # The account may have changed while argon2 ran; then this login does not count.
            if user is None or user.disabled or user.password_hash != expected_hash:
                raise AuthenticationError(INVALID_LOGIN)
            SessionRepository(session).add(user.id, token_hash(token), expires_at)
            principal = _principal(user, token_hash(token))
        return Login(token, csrf_token(token), expires_at, principal)

    def _rehash(self, user_id: int, old_hash: str, password: str) -> str:
        """Store the hash made with today's parameters; returns the hash now stored."""
        new_hash = self.passwords.hash(password)
        with self.database.write() as session:
            users = UserRepository(session)
            user = users.get(user_id)
            if user is None or user.password_hash != old_hash:
                return old_hash
            users.set_password_hash(user, new_hash, at=user.password_changed_at)
        return new_hash


def _principal(user: User, session_token_hash: str) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        role=check_role(user.role),
        method="session",
        session_token_hash=session_token_hash,
    )
