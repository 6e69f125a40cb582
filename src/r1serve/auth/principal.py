"""Who a request acts as, and the account values services hand out (never database rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from r1serve.errors import PermissionDeniedError
from r1serve.storage.models import ApiKey, User

Role = Literal["admin", "user"]
AuthMethod = Literal["session", "api_key", "local"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user, through a web session, an API key, or local mode."""

    user_id: int
    username: str
    role: Role
    method: AuthMethod
    api_key_id: int | None = None
    api_key_models: tuple[str, ...] | None = None  # None: every model
    session_token_hash: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_admin(self) -> None:
        """Raise 403 unless the caller is an admin."""
        if not self.is_admin:
            raise PermissionDeniedError("this needs an admin account")

    def require_model(self, model: str) -> None:
        """Raise 403 when the API key is scoped to other models."""
        if self.api_key_models is not None and model not in self.api_key_models:
            raise PermissionDeniedError(
                f"this API key may not use model {model!r}; it is limited to "
                + ", ".join(repr(name) for name in self.api_key_models),
                param="model",
            )


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Limits in force; None means no limit."""

    requests_per_minute: int | None = None
    tokens_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    quota: QuotaLimits  # the user's own limits, before defaults

    @classmethod
    def of(cls, user: User, quota: QuotaLimits) -> UserInfo:
        """From a row."""
        role: Role = "admin" if user.role == "admin" else "user"
        return cls(user.id, user.username, role, user.disabled, user.created_at, quota)


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as listed: never the key itself."""

    id: int
    user_id: int
    username: str
    prefix: str
    name: str
    models: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    quota: QuotaLimits

    @classmethod
    def of(cls, key: ApiKey, owner: User, quota: QuotaLimits) -> ApiKeyInfo:
        """From a row and its owner."""
        models = tuple(key.models) if key.models is not None else None
        return cls(
            key.id,
            key.user_id,
            owner.username,
            key.prefix,
            key.name,
            models,
            key.created_at,
            key.expires_at,
            key.revoked_at,
            quota,
        )

    def state(self, now: datetime) -> Literal["active", "revoked", "expired"]:
        """Whether the key still works."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key: ``key`` is shown to its owner once and never stored."""

    key: str
    info: ApiKeyInfo
