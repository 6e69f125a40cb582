"""Case 13: argon2id hashes, length limits (a 1 MB password is refused before hashing)."""

from __future__ import annotations

import time

import argon2
import pytest

from r1serve.auth.passwords import (
    MAX_PASSWORD_BYTES,
    Passwords,
    check_new_password,
    generate_password,
)
from r1serve.errors import RequestError

CHEAP = argon2.profiles.CHEAPEST


def test_hashes_are_argon2id_and_verify() -> None:
    passwords = Passwords(CHEAP)
    stored = passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse")
    assert not passwords.verify(stored, "correct horsE")
    assert not passwords.verify("not a hash", "correct horse")


def test_default_parameters_are_rfc_9106_low_memory() -> None:
    stored = Passwords().hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert Passwords(CHEAP).needs_rehash(stored)
    assert not Passwords().needs_rehash(stored)


def test_a_megabyte_password_is_refused_quickly_and_never_hashed() -> None:
    passwords = Passwords(CHEAP)
    huge = "x" * 1_000_000
    started = time.perf_counter()
    for check in (check_new_password, lambda p: passwords.verify(passwords.hash("ok"), p)):
        with pytest.raises(RequestError, match="longer than 1024 bytes") as caught:
            check(huge)
        assert caught.value.status_code == 400
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8"),
        ("é" * (MAX_PASSWORD_BYTES // 2 + 1), "longer than 1024 bytes"),  # 2 bytes per char
        ("has\x00nul-char", "NUL"),
        ("lone\ud800surrogate", "not valid Unicode"),
    ],
)
def test_new_password_rules(password: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        check_new_password(password)


def test_limit_is_exactly_1024_bytes() -> None:
    check_new_password("a" * MAX_PASSWORD_BYTES)
    with pytest.raises(RequestError):
        check_new_password("a" * (MAX_PASSWORD_BYTES + 1))


def test_generated_passwords_are_long_random_and_valid() -> None:
    first, second = generate_password(), generate_password()
    assert first != second and len(first) >= 20
    check_new_password(first)
