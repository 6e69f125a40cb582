"""Random secrets (session tokens, API keys) and their stored hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "r1s-"
# "r1s-" plus 8 random characters: shown in lists, unique, used to find the row.
API_KEY_VISIBLE_CHARS = len(API_KEY_PREFIX) + 8
MAX_API_KEY_CHARS = 100


def token_hash(token: str) -> str:
    """SHA-256 hex of a high-entropy secret; a slow hash would add nothing for 256-bit tokens."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_session_token() -> str:
    """A session id for the cookie (256 bits)."""
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """A new API key and its visible prefix."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:API_KEY_VISIBLE_CHARS]


def looks_like_api_key(value: str) -> bool:
    """Whether a presented value has the shape of an r1serve key (not whether it is valid)."""
    return (
        value.startswith(API_KEY_PREFIX)
        and API_KEY_VISIBLE_CHARS < len(value) <= MAX_API_KEY_CHARS
        and value.isascii()
    )


def csrf_token(session_token: str) -> str:
    """The CSRF token bound to a session; derived, so nothing more is stored."""
    digest = hmac.new(session_token.encode("utf-8"), b"r1serve-csrf", hashlib.sha256)
    return digest.hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets or hashes."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )
