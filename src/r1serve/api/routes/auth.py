"""Web login: log in, log out, who am I, change my password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from r1serve.api.account_schemas import CallerOut, LoginOut, LoginRequest, PasswordChange
from r1serve.api.security import SESSION_COOKIE, Accounts, Caller
from r1serve.auth import Login

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _set_cookie(response: Response, request: Request, login: Login, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        login.token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.post("/login", response_model=LoginOut)
def login(body: LoginRequest, request: Request, response: Response, accounts: Accounts) -> LoginOut:
    """Check the password and start a web session (a new session id at every login)."""
    old = request.cookies.get(SESSION_COOKIE)
    client_ip = request.client.host if request.client else "unknown"
    result = accounts.sessions.login(body.username, body.password, client_ip)
    if old:
        accounts.sessions.logout(old)
    _set_cookie(response, request, result, accounts.settings.session_ttl_s)
    return LoginOut(
        user=CallerOut.of(result.principal, result.csrf_token, accounts.settings.auth),
        expires_at=result.expires_at,
    )


@router.post("/logout", status_code=204)
def logout(request: Request, response: Response, accounts: Accounts, caller: Caller) -> None:
    """End this web session on the server and drop the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token and caller.method == "session":
        accounts.sessions.logout(token)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


@router.get("/me", response_model=CallerOut)
def me(request: Request, accounts: Accounts, caller: Caller) -> CallerOut:
    """The caller, and for a web session the CSRF token the page sends with changes."""
    token = request.cookies.get(SESSION_COOKIE)
    csrf = accounts.sessions.csrf_token(token) if token and caller.method == "session" else None
    return CallerOut.of(caller, csrf, accounts.settings.auth)


@router.post("/password", response_model=CallerOut)
def change_password(
    body: PasswordChange, request: Request, response: Response, accounts: Accounts, caller: Caller
) -> CallerOut:
    """Change my password: every session of mine ends; this browser gets a fresh one."""
    fresh = accounts.sessions.change_password(caller, body.current_password, body.new_password)
    if fresh is None:
        return CallerOut.of(caller, None, accounts.settings.auth)
    _set_cookie(response, request, fresh, accounts.settings.session_ttl_s)
    return CallerOut.of(fresh.principal, fresh.csrf_token, accounts.settings.auth)
