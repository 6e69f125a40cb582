"""Cases 14 and 15: login, throttling, session rotation, logout, CSRF, password change."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from r1serve.auth import AuthService, Principal
from r1serve.auth.tokens import token_hash
from r1serve.errors import (
    AuthenticationError,
    PermissionDeniedError,
    R1ServeError,
    RateLimitError,
    RequestError,
)
from r1serve.settings import Settings
from r1serve.storage import Database
from r1serve.storage.models import AuthSession

from .conftest import ADMIN_PASSWORD, FakeClock


def _failure(call: Callable[[], object]) -> R1ServeError:
    with pytest.raises(R1ServeError) as caught:
        call()
    return caught.value


def test_a_new_session_id_at_every_login_stored_only_as_a_hash(
    auth: AuthService, database: Database
) -> None:
    first = auth.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
    second = auth.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
    assert first.token != second.token and len(first.token) >= 43
    assert first.csrf_token != second.csrf_token
    with database.read() as session:
        stored = set(session.scalars(select(AuthSession.token_hash)))
    assert stored == {token_hash(first.token), token_hash(second.token)}
    assert auth.sessions.authenticate(second.token).username == "admin"


def test_logout_ends_the_session_server_side(auth: AuthService) -> None:
    login = auth.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
    auth.sessions.logout(login.token)
    with pytest.raises(AuthenticationError):
        auth.sessions.authenticate(login.token)
    auth.sessions.logout(login.token)  # twice is harmless


def test_sessions_expire(auth: AuthService, clock: FakeClock, auth_settings: Settings) -> None:
    login = auth.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
    clock.advance(auth_settings.session_ttl_s - 1)
    auth.sessions.authenticate(login.token)
    clock.advance(1)
    with pytest.raises(AuthenticationError):
        auth.sessions.authenticate(login.token)
    auth.housekeeping()


@pytest.mark.parametrize("token", ["", "x", "y" * 10_000])
def test_made_up_session_tokens_are_refused(auth: AuthService, token: str) -> None:
    with pytest.raises(AuthenticationError):
        auth.sessions.authenticate(token)


def test_unknown_user_and_wrong_password_look_the_same(auth: AuthService) -> None:
    unknown = _failure(lambda: auth.sessions.login("nobody", "some-password", "10.0.0.1"))
    wrong = _failure(lambda: auth.sessions.login("admin", "some-password", "10.0.0.1"))
    malformed = _failure(lambda: auth.sessions.login("no body!", "some-password", "10.0.0.1"))
    assert type(unknown) is type(wrong) is type(malformed) is AuthenticationError
    assert unknown.to_dict() == wrong.to_dict() == malformed.to_dict()


def test_unknown_user_takes_as_long_as_a_wrong_password(
    db_settings: Settings, database: Database
) -> None:
    real = AuthService(db_settings, database)  # production argon2 parameters
    real.users.create("ada", "ada-password")

    def median_s(username: str) -> float:
        times = []
        for attempt in range(5):
            started = time.perf_counter()
            with pytest.raises(AuthenticationError):
                real.sessions.login(username, "wrong-password", f"10.0.1.{attempt}")
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    known, unknown = median_s("ada"), median_s("nobody")
    # Without the dummy hash an unknown name answers ~100x faster.
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def test_twenty_failed_logins_get_429_with_retry_after(auth: AuthService) -> None:
    errors = [
        _failure(lambda: auth.sessions.login("admin", "wrong-password", "10.0.0.2"))
        for _ in range(20)
    ]
    assert all(isinstance(e, AuthenticationError) for e in errors[:10])
    assert all(isinstance(e, RateLimitError) for e in errors[10:])
    throttled = errors[-1]
    assert isinstance(throttled, RateLimitError) and throttled.retry_after > 0
    assert throttled.status_code == 429 and "too many failed logins" in throttled.message
    # Even the right password waits now, from that address.
    with pytest.raises(RateLimitError):
        auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.2")


def test_a_stranger_cannot_lock_the_admin_out_from_elsewhere(auth: AuthService) -> None:
    for _ in range(20):
        _failure(lambda: auth.sessions.login("admin", "wrong-password", "203.0.113.9"))
    assert isinstance(
        _failure(lambda: auth.sessions.login("admin", ADMIN_PASSWORD, "203.0.113.9")),
        RateLimitError,
    )
    auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.1")  # the admin, from their desk


def test_throttling_is_the_same_for_unknown_names(auth: AuthService) -> None:
    for _ in range(10):
        _failure(lambda: auth.sessions.login("nobody", "wrong-password", "10.0.0.3"))
    assert isinstance(
        _failure(lambda: auth.sessions.login("nobody", "wrong-password", "10.0.0.3")),
        RateLimitError,
    )


def test_one_address_trying_many_names_is_throttled(
    auth: AuthService, auth_settings: Settings
) -> None:
    for n in range(auth_settings.login_max_failures_per_ip):
        _failure(lambda n=n: auth.sessions.login(f"user{n}", "wrong-password", "10.0.0.5"))
    error = _failure(lambda: auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.5"))
    assert isinstance(error, RateLimitError) and "from this address" in error.message
    auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.6")


def test_throttle_lifts_after_retry_after(auth: AuthService, clock: FakeClock) -> None:
    for _ in range(10):
        _failure(lambda: auth.sessions.login("admin", "wrong-password", "10.0.0.7"))
    error = _failure(lambda: auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.7"))
    assert isinstance(error, RateLimitError)
    clock.advance(error.retry_after)
    auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.7")


def test_a_successful_login_clears_the_account_counter(auth: AuthService) -> None:
    for _ in range(9):
        _failure(lambda: auth.sessions.login("admin", "wrong-password", "10.0.0.8"))
    auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.8")
    for _ in range(9):
        _failure(lambda: auth.sessions.login("admin", "wrong-password", "10.0.0.9"))
    auth.sessions.login("admin", ADMIN_PASSWORD, "10.0.0.9")


def test_huge_credentials_are_refused_before_any_work(auth: AuthService) -> None:
    with pytest.raises(RequestError, match="1024 bytes"):
        auth.sessions.login("admin", "p" * 1_000_000, "10.0.0.10")
    with pytest.raises(RequestError, match="user name is longer"):
        auth.sessions.login("a" * 1_000_000, "password", "10.0.0.10")


def test_csrf_token_belongs_to_its_session(auth: AuthService) -> None:
    first = auth.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
    second = auth.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
    auth.sessions.check_csrf(first.token, first.csrf_token)
    assert auth.sessions.csrf_token(first.token) == first.csrf_token
    for presented in (None, "", second.csrf_token, first.token):
        with pytest.raises(PermissionDeniedError, match="CSRF"):
            auth.sessions.check_csrf(first.token, presented)


def test_changing_ones_password_ends_every_session_and_opens_a_new_one(
    auth: AuthService, make_user: Callable[..., Principal]
) -> None:
    make_user("ada")
    laptop = auth.sessions.login("ada", "ada-password", "127.0.0.1")
    phone = auth.sessions.login("ada", "ada-password", "127.0.0.1")
    with pytest.raises(PermissionDeniedError, match="current password"):
        auth.sessions.change_password(laptop.principal, "wrong-password", "new-password-1")
    fresh = auth.sessions.change_password(laptop.principal, "ada-password", "new-password-1")
    assert fresh is not None and fresh.token not in (laptop.token, phone.token)
    for old in (laptop, phone):
        with pytest.raises(AuthenticationError):
            auth.sessions.authenticate(old.token)
    assert auth.sessions.authenticate(fresh.token).username == "ada"
    with pytest.raises(RequestError, match="at least 8"):
        auth.sessions.change_password(fresh.principal, "new-password-1", "short")


def test_old_hashes_are_upgraded_at_login(
    auth: AuthService, db_settings: Settings, database: Database
) -> None:
    stronger = AuthService(db_settings, database)  # default parameters, same database
    stronger.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
    [admin] = stronger.users.list()
    with database.read() as session:
        from r1serve.storage.repositories import UserRepository

        user = UserRepository(session).get(admin.id)
        assert user is not None and not stronger.passwords.needs_rehash(user.password_hash)
    stronger.sessions.login("admin", ADMIN_PASSWORD, "127.0.0.1")
