"""Wire types of the account routes (never database rows)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from r1serve.api.params import INT32_MAX
from r1serve.auth import ApiKeyInfo, Principal, QuotaLimits, UserInfo
from r1serve.auth.quotas import MAX_LIMIT, QuotaStatus
from r1serve.storage.repositories import UsageDay, UsageTotals


class _Input(BaseModel):
    # Our own API: a misspelled field is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Input):
    # Lengths are checked by the service so that a huge password gets a clear 400.
    username: str
    password: str


class PasswordChange(_Input):
    current_password: str
    new_password: str


# The columns' ranges: requests_per_minute is an INTEGER, tokens_per_day a BIGINT.
RequestsPerMinute = Annotated[int, Field(ge=1, le=INT32_MAX)]
TokensPerDay = Annotated[int, Field(ge=1, le=MAX_LIMIT)]


class Quota(BaseModel):
    requests_per_minute: RequestsPerMinute | None = Field(None, description="Empty: no limit.")
    tokens_per_day: TokensPerDay | None = Field(
        None, description="Prompt + completion tokens per UTC day."
    )

    @classmethod
    def of(cls, limits: QuotaLimits) -> Quota:
        return cls(
            requests_per_minute=limits.requests_per_minute, tokens_per_day=limits.tokens_per_day
        )

    def limits(self) -> QuotaLimits:
        return QuotaLimits(self.requests_per_minute, self.tokens_per_day)


class QuotaInput(_Input, Quota):
    pass


class UserOut(BaseModel):
    id: int
    username: str
    role: Literal["admin", "user"]
    disabled: bool = False
    created_at: datetime | None = None
    quota: Quota = Quota()

    @classmethod
    def of(cls, user: UserInfo) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            role=user.role,
            disabled=user.disabled,
            created_at=user.created_at,
            quota=Quota.of(user.quota),
        )


class CallerOut(BaseModel):
    """The logged-in caller; ``csrf_token`` goes into X-CSRF-Token on changes."""

    id: int
    username: str
    role: Literal["admin", "user"]
    method: Literal["session", "api_key", "local"]
    csrf_token: str | None = None
    auth_enabled: bool = True

    @classmethod
    def of(cls, caller: Principal, csrf_token: str | None, auth_enabled: bool) -> CallerOut:
        return cls(
            id=caller.user_id,
            username=caller.username,
            role=caller.role,
            method=caller.method,
            csrf_token=csrf_token,
            auth_enabled=auth_enabled,
        )


class LoginOut(BaseModel):
    user: CallerOut
    expires_at: datetime


class KeyCreate(_Input):
    name: str = ""
    models: list[str] | None = Field(None, description="Models the key may use; empty: all.")
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    requests_per_minute: RequestsPerMinute | None = None
    tokens_per_day: TokensPerDay | None = None


class KeyOut(BaseModel):
    id: int
    prefix: str
    user_id: int
    username: str
    name: str
    models: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    state: Literal["active", "revoked", "expired"]
    quota: Quota

    @classmethod
    def of(cls, key: ApiKeyInfo, now: datetime) -> KeyOut:
        return cls(
            id=key.id,
            prefix=key.prefix,
            user_id=key.user_id,
            username=key.username,
            name=key.name,
            models=list(key.models) if key.models is not None else None,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            state=key.state(now),
            quota=Quota.of(key.quota),
        )


class CreatedKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown only in this response.")


class UserCreate(_Input):
    username: str
    password: str | None = Field(None, description="Empty: generate one and return it once.")
    role: str = "user"


class UserChange(_Input):
    role: str | None = None
    disabled: bool | None = None


class PasswordReset(_Input):
    password: str | None = Field(None, description="Empty: generate one and return it once.")


class CreatedUserOut(BaseModel):
    user: UserOut
    password: str | None = Field(None, description="The generated password, shown only here.")


class GeneratedPassword(BaseModel):
    password: str | None = None


class UsageTotalsOut(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, totals: UsageTotals) -> UsageTotalsOut:
        return cls(
            requests=totals.requests,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            total_tokens=totals.total_tokens,
        )


class UsageDayOut(BaseModel):
    day: date
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, day: UsageDay) -> UsageDayOut:
        return cls(
            day=day.day,
            model=day.model,
            requests=day.requests,
            prompt_tokens=day.prompt_tokens,
            completion_tokens=day.completion_tokens,
        )


class UsageRecordOut(BaseModel):
    id: int
    created_at: datetime
    user_id: int | None
    api_key_id: int | None
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    status: str


class QuotaStatusOut(BaseModel):
    user: Quota
    key: Quota | None
    user_tokens_today: int
    key_tokens_today: int | None
    resets_at: datetime

    @classmethod
    def of(cls, status: QuotaStatus) -> QuotaStatusOut:
        return cls(
            user=Quota.of(status.user),
            key=Quota.of(status.key) if status.key is not None else None,
            user_tokens_today=status.user_tokens_today,
            key_tokens_today=status.key_tokens_today,
            resets_at=status.resets_at,
        )


class UsageOut(BaseModel):
    since: datetime
    totals: UsageTotalsOut
    days: list[UsageDayOut]
    recent: list[UsageRecordOut]
    quota: QuotaStatusOut | None = None
