"""API keys: mine (create, list, revoke) and, for admins, everyone's."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from r1serve.api.account_schemas import CreatedKeyOut, KeyCreate, KeyOut, QuotaInput
from r1serve.api.params import KeyIdPath, UserIdQuery
from r1serve.api.security import Accounts, Admin, Caller
from r1serve.auth import QuotaLimits

router = APIRouter(tags=["keys"])


@router.get("/api/keys", response_model=list[KeyOut])
def my_keys(accounts: Accounts, caller: Caller) -> list[KeyOut]:
    """My keys, newest first (prefixes only; a key is shown once, at creation)."""
    now = accounts.clock()
    return [KeyOut.of(key, now) for key in accounts.keys.list(caller, user_id=caller.user_id)]


@router.post("/api/keys", response_model=CreatedKeyOut, status_code=201)
def create_key(body: KeyCreate, accounts: Accounts, caller: Caller) -> CreatedKeyOut:
    """Create a key for me; the response is the only place the key appears."""
    expires_at = (
        accounts.clock() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    )
    created = accounts.keys.create(
        caller.user_id,
        name=body.name,
        models=body.models or None,
        expires_at=expires_at,
        quota=QuotaLimits(body.requests_per_minute, body.tokens_per_day),
    )
    out = KeyOut.of(created.info, accounts.clock())
    return CreatedKeyOut(**out.model_dump(), key=created.key)


@router.delete("/api/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: KeyIdPath, accounts: Accounts, caller: Caller) -> KeyOut:
    """Revoke one of my keys (admins: anyone's); it fails on its next use."""
    return KeyOut.of(accounts.keys.revoke(caller, key_id), accounts.clock())


@router.put("/api/keys/{key_id}/quota", response_model=KeyOut)
def set_key_quota(
    key_id: KeyIdPath, body: QuotaInput, accounts: Accounts, caller: Caller
) -> KeyOut:
    """Limits for one key, on top of its owner's."""
    accounts.quotas.set_key_quota(caller, key_id, body.limits())
    return KeyOut.of(accounts.keys.get(caller, key_id), accounts.clock())


@router.get("/api/admin/keys", response_model=list[KeyOut])
def all_keys(accounts: Accounts, admin: Admin, user_id: UserIdQuery = None) -> list[KeyOut]:
    """Everyone's keys, or one user's."""
    now = accounts.clock()
    return [KeyOut.of(key, now) for key in accounts.keys.list(admin, user_id=user_id)]
