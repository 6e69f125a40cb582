"""Cases 12 and 13: API keys shown once, stored hashed, compared in constant time, revocable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from r1serve.auth import AuthService, Principal, QuotaLimits
from r1serve.errors import AuthenticationError, NotFoundError, PermissionDeniedError, RequestError
from r1serve.storage import Database
from r1serve.storage.models import ApiKey

from .conftest import FakeClock


def test_created_key_has_the_prefix_and_is_stored_only_as_a_hash(
    auth: AuthService, admin: Principal, database: Database
) -> None:
    created = auth.keys.create(admin.user_id, name="laptop")
    assert created.key.startswith("r1s-") and len(created.key) > 40
    assert created.key.startswith(created.info.prefix) and len(created.info.prefix) == 12
    with database.read() as session:
        row = session.scalars(select(ApiKey)).one()
        stored = [str(value) for value in (row.prefix, row.key_hash, row.name, row.models)]
    assert created.key not in " ".join(stored)
    assert created.key[12:] not in " ".join(stored)
    listed = auth.keys.list(admin)
    assert [info.prefix for info in listed] == [created.info.prefix]
    assert created.key not in repr(listed)


def test_a_key_authenticates_as_its_owner(
    auth: AuthService, make_user: Callable[..., Principal]
) -> None:
    ada = make_user("ada")
    created = auth.keys.create(ada.user_id, models=["tiny-r1"])
    caller = auth.authenticate(session_token=None, api_key=created.key)
    assert (caller.username, caller.method, caller.api_key_id) == (
        "ada",
        "api_key",
        created.info.id,
    )
    caller.require_model("tiny-r1")
    with pytest.raises(PermissionDeniedError, match="may not use model 'other'"):
        caller.require_model("other")
    with pytest.raises(PermissionDeniedError):
        caller.require_admin()


@pytest.mark.parametrize(
    "presented",
    ["", "r1s-", "Bearer r1s-x", "sk-0123456789abcdef0123456789", "r1s-" + "A" * 43, "r1s-é" * 9],
)
def test_made_up_keys_are_refused(auth: AuthService, admin: Principal, presented: str) -> None:
    auth.keys.create(admin.user_id)
    with pytest.raises(AuthenticationError, match="invalid API key"):
        auth.keys.authenticate(presented)


def test_a_key_with_a_real_prefix_but_wrong_secret_is_refused(
    auth: AuthService, admin: Principal
) -> None:
    created = auth.keys.create(admin.user_id)
    forged = created.key[:-1] + ("A" if created.key[-1] != "A" else "B")
    with pytest.raises(AuthenticationError, match="invalid API key"):
        auth.keys.authenticate(forged)


def test_keys_are_compared_in_constant_time_even_for_unknown_prefixes(
    auth: AuthService, admin: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    import r1serve.auth.keys as keys_module

    compared: list[tuple[str, str]] = []
    real = keys_module.same_secret

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module, "same_secret", spy)
    created = auth.keys.create(admin.user_id)
    auth.keys.authenticate(created.key)
    with pytest.raises(AuthenticationError):
        auth.keys.authenticate("r1s-ZZZZZZZZ" + "x" * 35)
    assert len(compared) == 2 and all(len(a) == len(b) == 64 for a, b in compared)


def test_revoked_key_fails_on_its_next_use(auth: AuthService, admin: Principal) -> None:
    created = auth.keys.create(admin.user_id)
    auth.keys.authenticate(created.key)
    revoked = auth.keys.revoke(admin, created.info.id)
    assert revoked.revoked_at is not None
    with pytest.raises(AuthenticationError, match="revoked"):
        auth.keys.authenticate(created.key)


def test_expired_key_fails(auth: AuthService, admin: Principal, clock: FakeClock) -> None:
    created = auth.keys.create(admin.user_id, expires_at=clock() + timedelta(hours=1))
    assert created.info.state(clock()) == "active"
    clock.advance(3600)
    with pytest.raises(AuthenticationError, match="expired"):
        auth.keys.authenticate(created.key)
    assert auth.keys.get(admin, created.info.id).state(clock()) == "expired"
    with pytest.raises(RequestError, match="in the past"):
        auth.keys.create(admin.user_id, expires_at=clock())


def test_keys_of_a_disabled_user_fail_and_work_again_when_enabled(
    auth: AuthService, make_user: Callable[..., Principal]
) -> None:
    ada = make_user("ada")
    created = auth.keys.create(ada.user_id)
    auth.users.set_disabled(ada.user_id, True)
    with pytest.raises(AuthenticationError, match="disabled"):
        auth.keys.authenticate(created.key)
    auth.users.set_disabled(ada.user_id, False)
    auth.keys.authenticate(created.key)


def test_a_demoted_admins_key_loses_admin_rights_at_once(
    auth: AuthService, admin: Principal, make_user: Callable[..., Principal]
) -> None:
    root2 = make_user("root2", "admin")
    created = auth.keys.create(root2.user_id)
    auth.keys.authenticate(created.key).require_admin()
    auth.users.set_role(root2.user_id, "user")
    with pytest.raises(PermissionDeniedError):
        auth.keys.authenticate(created.key).require_admin()


def test_users_see_and_revoke_only_their_own_keys(
    auth: AuthService, admin: Principal, make_user: Callable[..., Principal]
) -> None:
    ada, bob = make_user("ada"), make_user("bob")
    adas = auth.keys.create(ada.user_id, name="ada's")
    bobs = auth.keys.create(bob.user_id, name="bob's")
    assert [k.name for k in auth.keys.list(ada)] == ["ada's"]
    assert [k.name for k in auth.keys.list(ada, user_id=bob.user_id)] == ["ada's"]
    for call in (auth.keys.get, auth.keys.revoke):
        with pytest.raises(NotFoundError):
            call(ada, bobs.info.id)
    with pytest.raises(NotFoundError):
        auth.quotas.set_key_quota(ada, bobs.info.id, QuotaLimits(1, None))
    auth.keys.authenticate(bobs.key)
    assert {k.name for k in auth.keys.list(admin)} == {"ada's", "bob's"}
    assert [k.name for k in auth.keys.list(admin, user_id=bob.user_id)] == ["bob's"]
    auth.keys.revoke(admin, adas.info.id)
    with pytest.raises(AuthenticationError):
        auth.keys.authenticate(adas.key)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "n" * 101}, "longer than 100"),
        ({"name": "bad\nname"}, "control characters"),
        ({"models": []}, "1 to 50 models"),
        ({"models": [f"m{i}" for i in range(51)]}, "1 to 50 models"),
        ({"models": [""]}, "not a model name"),
        ({"quota": QuotaLimits(0, None)}, "requests_per_minute must be between 1"),
        ({"quota": QuotaLimits(None, -5)}, "tokens_per_day must be between 1"),
    ],
)
def test_bad_key_settings_are_refused(
    auth: AuthService, admin: Principal, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        auth.keys.create(admin.user_id, **kwargs)  # type: ignore[arg-type]


def test_key_for_an_unknown_user(auth: AuthService) -> None:
    with pytest.raises(NotFoundError):
        auth.keys.create(999)


def test_operator_finds_a_key_by_prefix(auth: AuthService, admin: Principal) -> None:
    created = auth.keys.create(admin.user_id, quota=QuotaLimits(5, 1000))
    found = auth.keys.by_prefix(created.info.prefix)
    assert (found.id, found.quota) == (created.info.id, QuotaLimits(5, 1000))
    with pytest.raises(NotFoundError):
        auth.keys.by_prefix("r1s-nothere")


def test_still_valid_follows_revocation_disabling_and_role_changes(
    auth: AuthService, admin: Principal, make_user: Callable[..., Principal]
) -> None:
    ada = make_user("ada", "admin")
    key = auth.authenticate(session_token=None, api_key=auth.keys.create(ada.user_id).key)
    web = auth.sessions.login("ada", "ada-password", "::1").principal
    assert auth.still_valid(key) and auth.still_valid(web)
    auth.users.set_role(ada.user_id, "user")
    assert not auth.still_valid(key) and not auth.still_valid(web)  # the role changed
    key = auth.authenticate(session_token=None, api_key=auth.keys.create(ada.user_id).key)
    assert auth.still_valid(key)
    auth.keys.revoke(admin, key.api_key_id or 0)
    assert not auth.still_valid(key)
    other = auth.authenticate(session_token=None, api_key=auth.keys.create(ada.user_id).key)
    auth.users.set_disabled(ada.user_id, True)
    assert not auth.still_valid(other)
    assert auth.still_valid(auth.local_principal())
