"""Users: names, roles, disabling, password changes, the first admin."""

from __future__ import annotations

from collections.abc import Callable

import argon2
import pytest
from pydantic import SecretStr

from r1serve.auth import AuthService, Principal
from r1serve.errors import AuthenticationError, ConfigError, NotFoundError, RequestError
from r1serve.settings import Settings
from r1serve.storage import Database


def test_first_start_creates_the_admin_from_the_setting(auth: AuthService) -> None:
    [admin] = auth.users.list()
    assert (admin.username, admin.role, admin.disabled) == ("admin", "admin", False)
    assert auth.start() is None  # a second start creates nothing


def test_first_start_without_a_password_generates_one_that_works(
    db_settings: Settings, database: Database
) -> None:
    service = AuthService(db_settings, database, password_parameters=argon2.profiles.CHEAPEST)
    try:
        generated = service.start()
        assert generated is not None and len(generated) >= 20
        assert service.sessions.login("admin", generated, "::1").principal.is_admin
        assert service.users.ensure_admin(None) is None
    finally:
        service.close()


def test_an_unusable_admin_password_setting_is_a_config_error(
    db_settings: Settings, database: Database
) -> None:
    settings = db_settings.model_copy(update={"admin_password": SecretStr("short")})
    service = AuthService(settings, database, password_parameters=argon2.profiles.CHEAPEST)
    with pytest.raises(ConfigError, match=r"R1SERVE_ADMIN_PASSWORD.*at least 8"):
        service.start()


def test_names_are_normalized_and_unique(auth: AuthService) -> None:
    created = auth.users.create("  Ada.Lovelace@Example.org ", "password-1")
    assert created.username == "ada.lovelace@example.org"
    assert auth.users.by_name("ADA.lovelace@example.org").id == created.id
    with pytest.raises(RequestError, match="already exists"):
        auth.users.create("ada.lovelace@EXAMPLE.org", "password-2")


@pytest.mark.parametrize("name", ["", "-ada", "a b", "ada/../x", "x" * 65, "ada\x00", "<b>"])
def test_bad_names_are_refused(auth: AuthService, name: str) -> None:
    with pytest.raises(RequestError, match="user name"):
        auth.users.create(name, "password-1")


def test_unknown_role_and_unknown_user(auth: AuthService) -> None:
    with pytest.raises(RequestError, match="role must be one of admin, user"):
        auth.users.create("bob", "password-1", "root")
    with pytest.raises(NotFoundError):
        auth.users.get(999)
    with pytest.raises(NotFoundError):
        auth.users.by_name("nobody")


def test_role_change_ends_sessions_and_takes_effect(
    auth: AuthService, make_user: Callable[..., Principal]
) -> None:
    ada = make_user("ada", "admin")
    login = auth.sessions.login("ada", "ada-password", "127.0.0.1")
    assert auth.users.set_role(ada.user_id, "user").role == "user"
    with pytest.raises(AuthenticationError):
        auth.sessions.authenticate(login.token)
    fresh = auth.sessions.login("ada", "ada-password", "127.0.0.1")
    assert not fresh.principal.is_admin


def test_disabling_ends_sessions_and_blocks_logins(
    auth: AuthService, make_user: Callable[..., Principal]
) -> None:
    ada = make_user("ada")
    login = auth.sessions.login("ada", "ada-password", "127.0.0.1")
    assert auth.users.set_disabled(ada.user_id, True).disabled
    with pytest.raises(AuthenticationError):
        auth.sessions.authenticate(login.token)
    with pytest.raises(Exception, match="disabled"):
        auth.sessions.login("ada", "ada-password", "127.0.0.1")
    auth.users.set_disabled(ada.user_id, False)
    auth.sessions.login("ada", "ada-password", "127.0.0.1")


def test_the_last_enabled_admin_cannot_be_demoted_or_disabled(
    auth: AuthService, admin: Principal, make_user: Callable[..., Principal]
) -> None:
    with pytest.raises(RequestError, match="last enabled admin"):
        auth.users.set_role(admin.user_id, "user")
    with pytest.raises(RequestError, match="last enabled admin"):
        auth.users.set_disabled(admin.user_id, True)
    make_user("root2", "admin")
    auth.users.set_role(admin.user_id, "user")


def test_admin_password_reset_ends_sessions(
    auth: AuthService, make_user: Callable[..., Principal]
) -> None:
    ada = make_user("ada")
    login = auth.sessions.login("ada", "ada-password", "127.0.0.1")
    auth.users.set_password(ada.user_id, "new-password-1")
    with pytest.raises(AuthenticationError):
        auth.sessions.authenticate(login.token)
    with pytest.raises(AuthenticationError):
        auth.sessions.login("ada", "ada-password", "127.0.0.1")
    auth.sessions.login("ada", "new-password-1", "127.0.0.1")


def test_an_admin_is_created_when_only_plain_users_exist(
    db_settings: Settings, database: Database
) -> None:
    service = AuthService(db_settings, database, password_parameters=argon2.profiles.CHEAPEST)
    service.users.create("bob", "bob-password")  # e.g. `r1serve users add bob` before serving
    generated = service.start()
    try:
        assert generated is not None
        assert service.users.by_name("admin").role == "admin"
    finally:
        service.close()


def test_a_plain_user_named_admin_blocks_the_bootstrap_with_a_clear_error(
    db_settings: Settings, database: Database
) -> None:
    service = AuthService(db_settings, database, password_parameters=argon2.profiles.CHEAPEST)
    service.users.create("admin", "admin-password")
    with pytest.raises(ConfigError, match="users role NAME admin"):
        service.start()
