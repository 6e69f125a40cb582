"""Password rules and argon2id hashing."""

from __future__ import annotations

import secrets
import threading

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from r1serve.errors import RequestError

MIN_PASSWORD_CHARS = 8
# argon2 would hash a megabyte happily; refusing early keeps a login request cheap.
MAX_PASSWORD_BYTES = 1024


def check_password_length(password: str, *, param: str = "password") -> None:
    """Reject a password longer than 1 KiB, before anything hashes it."""
    if len(password) > MAX_PASSWORD_BYTES or len(password.encode("utf-8", "surrogatepass")) > (
        MAX_PASSWORD_BYTES
    ):
        raise RequestError(
            f"password is longer than {MAX_PASSWORD_BYTES} bytes; use a shorter one", param=param
        )


def check_new_password(password: str, *, param: str = "password") -> None:
    """The rules a new password must meet."""
    check_password_length(password, param=param)
    if len(password) < MIN_PASSWORD_CHARS:
        raise RequestError(
            f"password must be at least {MIN_PASSWORD_CHARS} characters long", param=param
        )
    if "\x00" in password:
        raise RequestError("password must not contain NUL characters", param=param)
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("password is not valid Unicode text", param=param) from None


def generate_password() -> str:
    """A random password for accounts created without one (about 128 bits)."""
    return secrets.token_urlsafe(16)


class Passwords:
    """argon2id hashing; ``verify_dummy`` spends the same time when there is no user to check."""

    def __init__(self, parameters: argon2.Parameters = argon2.profiles.RFC_9106_LOW_MEMORY) -> None:
        self._hasher = argon2.PasswordHasher.from_parameters(parameters)
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def hash(self, password: str) -> str:
        """Hash a password that passed ``check_new_password``."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether the password matches the stored hash."""
        check_password_length(password)
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> None:
        """Do the work of a failed verification, so unknown users take as long as known ones."""
        self.verify(self.dummy_hash(), password)

    def dummy_hash(self) -> str:
        """A hash of nothing anyone knows, made once (``AuthService.start`` makes it early)."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
            return self._dummy_hash

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
