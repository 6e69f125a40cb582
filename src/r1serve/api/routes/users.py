"""Admin: users, their roles, disabled flags, passwords and quotas."""

from __future__ import annotations

from fastapi import APIRouter

from r1serve.api.account_schemas import (
    CreatedUserOut,
    GeneratedPassword,
    PasswordReset,
    QuotaInput,
    UserChange,
    UserCreate,
    UserOut,
)
from r1serve.api.params import UserIdPath
from r1serve.api.security import Accounts, Admin
from r1serve.auth.passwords import generate_password

router = APIRouter(prefix="/api/admin/users", tags=["users"])


@router.get("", response_model=list[UserOut])
def list_users(accounts: Accounts, admin: Admin) -> list[UserOut]:
    """Every user, by name."""
    return [UserOut.of(user) for user in accounts.users.list()]


@router.post("", response_model=CreatedUserOut, status_code=201)
def create_user(body: UserCreate, accounts: Accounts, admin: Admin) -> CreatedUserOut:
    """Add a user; without a password one is generated and returned once."""
    password = body.password or generate_password()
    user = accounts.users.create(body.username, password, body.role)
    return CreatedUserOut(user=UserOut.of(user), password=None if body.password else password)


@router.patch("/{user_id}", response_model=UserOut)
def change_user(user_id: UserIdPath, body: UserChange, accounts: Accounts, admin: Admin) -> UserOut:
    """Change role and/or disabled flag; the user's web sessions end."""
    user = accounts.users.get(user_id)
    if body.role is not None:
        user = accounts.users.set_role(user_id, body.role)
    if body.disabled is not None:
        user = accounts.users.set_disabled(user_id, body.disabled)
    return UserOut.of(user)


@router.post("/{user_id}/password", response_model=GeneratedPassword)
def reset_password(
    user_id: UserIdPath, body: PasswordReset, accounts: Accounts, admin: Admin
) -> GeneratedPassword:
    """Set a user's password (generated when empty); their web sessions end."""
    password = body.password or generate_password()
    accounts.users.set_password(user_id, password)
    return GeneratedPassword(password=None if body.password else password)


@router.put("/{user_id}/quota", response_model=UserOut)
def set_quota(user_id: UserIdPath, body: QuotaInput, accounts: Accounts, admin: Admin) -> UserOut:
    """The user's own limits; empty ones fall back to the server default."""
    accounts.quotas.set_user_quota(user_id, body.limits())
    return UserOut.of(accounts.users.get(user_id))
