"""API keys: created per user, shown once, stored as a hash, scoped, expiring, revocable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from r1serve.auth.principal import ApiKeyInfo, CreatedApiKey, Principal, QuotaLimits
from r1serve.auth.quotas import check_limits
from r1serve.auth.tokens import (
    API_KEY_VISIBLE_CHARS,
    looks_like_api_key,
    new_api_key,
    same_secret,
    token_hash,
)
from r1serve.auth.users import check_role
from r1serve.errors import AuthenticationError, NotFoundError, RequestError
from r1serve.storage import Database
from r1serve.storage.models import ApiKey, User
from r1serve.storage.repositories import ApiKeyRepository, QuotaRepository, UserRepository

MAX_KEY_NAME_CHARS = 100
MAX_SCOPED_MODELS = 50
MAX_MODEL_NAME_CHARS = 200
MAX_ACTIVE_KEYS_PER_USER = 100
INVALID_KEY = "invalid API key"


def _check_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_KEY_NAME_CHARS:
        raise RequestError(f"key name is longer than {MAX_KEY_NAME_CHARS} characters", param="name")
    if any(not char.isprintable() for char in name):
        raise RequestError("key name must not contain control characters", param="name")
    return name


def _check_models(models: Sequence[str] | None) -> list[str] | None:
    if models is None:
        return None
    names = list(dict.fromkeys(model.strip() for model in models))
    if not names or len(names) > MAX_SCOPED_MODELS:
        raise RequestError(
            f"a key's model scope lists 1 to {MAX_SCOPED_MODELS} models (or none for all)",
            param="models",
        )
    for name in names:
        if not name or len(name) > MAX_MODEL_NAME_CHARS or not name.isprintable():
            raise RequestError(f"not a model name: {name[:50]!r}", param="models")
    return names


class ApiKeyService:
    """Create, list, revoke and check API keys. Users see and revoke only their own."""

    def __init__(self, database: Database, clock: Callable[[], datetime]) -> None:
        self.database = database
        self.clock = clock

    def create(
        self,
        owner_id: int,
        *,
        name: str = "",
        models: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        quota: QuotaLimits | None = None,
    ) -> CreatedApiKey:
        """Make a key for a user; the returned ``key`` is never shown again."""
        clean_name = _check_name(name)
        scope = _check_models(models)
        if expires_at is not None and expires_at <= self.clock():
            raise RequestError("the expiry date is in the past", param="expires_at")
        if quota is not None:
            check_limits(quota)
        for _attempt in range(3):  # a prefix clash is astronomically rare, but cheap to survive
            key, prefix = new_api_key()
            try:
                with self.database.write() as session:
                    owner = self._owner(session, owner_id)
                    keys = ApiKeyRepository(session)
                    active = [row for row, _ in keys.list(owner.id) if self._active(row)]
                    if len(active) >= MAX_ACTIVE_KEYS_PER_USER:
                        raise RequestError(
                            f"{owner.username!r} already has {MAX_ACTIVE_KEYS_PER_USER} active "
                            "keys; revoke some first"
                        )
                    row = keys.add(
                        user_id=owner.id,
                        prefix=prefix,
                        key_hash=token_hash(key),
                        name=clean_name,
                        models=scope,
                        expires_at=expires_at,
                    )
                    if quota is not None and quota != QuotaLimits():
                        QuotaRepository(session).set(
                            api_key_id=row.id,
                            requests_per_minute=quota.requests_per_minute,
                            tokens_per_day=quota.tokens_per_day,
                        )
                    return CreatedApiKey(key, ApiKeyInfo.of(row, owner, quota or QuotaLimits()))
            except IntegrityError:
                continue
        raise RequestError("could not create a unique key; try again")

    def list(self, actor: Principal, *, user_id: int | None = None) -> list[ApiKeyInfo]:
        """Keys, newest first: the actor's own, or (admins) one user's or everyone's."""
        if not actor.is_admin:
            user_id = actor.user_id
        with self.database.read() as session:
            rows = ApiKeyRepository(session).list(user_id)
            quotas = QuotaRepository(session)
            return [ApiKeyInfo.of(key, owner, _limits(quotas, key.id)) for key, owner in rows]

    def get(self, actor: Principal, key_id: int) -> ApiKeyInfo:
        """One key; another user's key is 404 for a non-admin."""
        with self.database.read() as session:
            key, owner = self._visible(session, actor, key_id)
            return ApiKeyInfo.of(key, owner, _limits(QuotaRepository(session), key.id))

    def revoke(self, actor: Principal, key_id: int) -> ApiKeyInfo:
        """Revoke a key; it fails on its next use."""
        with self.database.write() as session:
            key, owner = self._visible(session, actor, key_id)
            ApiKeyRepository(session).revoke(key, self.clock())
            return ApiKeyInfo.of(key, owner, _limits(QuotaRepository(session), key.id))

    def by_prefix(self, prefix: str) -> ApiKeyInfo:
        """A key by its visible prefix (for the operator's CLI)."""
        with self.database.read() as session:
            found = ApiKeyRepository(session).by_prefix_with_user(prefix.strip())
            if found is None:
                raise NotFoundError(f"no API key with prefix {prefix!r}", param="prefix")
            return ApiKeyInfo.of(found[0], found[1], _limits(QuotaRepository(session), found[0].id))

    def authenticate(self, presented: str) -> Principal:
        """The user behind a presented key; 401 for unknown, revoked or expired keys."""
        if not looks_like_api_key(presented):
            raise AuthenticationError(INVALID_KEY)
        prefix = presented[:API_KEY_VISIBLE_CHARS]
        presented_hash = token_hash(presented)
        with self.database.read() as session:
            found = ApiKeyRepository(session).by_prefix_with_user(prefix)
        stored_hash = found[0].key_hash if found is not None else "0" * len(presented_hash)
        # Always compare, in constant time, so a wrong key and an unknown prefix cost the same.
        matches = same_secret(stored_hash, presented_hash)
        if found is None or not matches:
            raise AuthenticationError(INVALID_KEY)
        key, owner = found
        if key.revoked_at is not None:
            raise AuthenticationError("this API key has been revoked")
        if key.expires_at is not None and key.expires_at <= self.clock():
            raise AuthenticationError("this API key has expired")
        if owner.disabled:
            raise AuthenticationError("the account that owns this API key is disabled")
        return Principal(
            user_id=owner.id,
            username=owner.username,
            role=check_role(owner.role),
            method="api_key",
            api_key_id=key.id,
            api_key_models=tuple(key.models) if key.models is not None else None,
        )

    def _active(self, key: ApiKey) -> bool:
        return key.revoked_at is None and (key.expires_at is None or key.expires_at > self.clock())

    def _owner(self, session: Session, user_id: int) -> User:
        owner = UserRepository(session).get(user_id)
        if owner is None:
            raise NotFoundError(f"no user with id {user_id}", param="user_id")
        return owner

    def _visible(self, session: Session, actor: Principal, key_id: int) -> tuple[ApiKey, User]:
        key = ApiKeyRepository(session).get(key_id)
        # Someone else's key looks exactly like a missing one.
        if key is None or (not actor.is_admin and key.user_id != actor.user_id):
            raise NotFoundError(f"no API key with id {key_id}", param="key_id")
        return key, self._owner(session, key.user_id)


def _limits(quotas: QuotaRepository, key_id: int) -> QuotaLimits:
    row = quotas.for_key(key_id)
    return QuotaLimits(row.requests_per_minute, row.tokens_per_day) if row else QuotaLimits()
