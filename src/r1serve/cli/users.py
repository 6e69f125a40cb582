"""`r1serve users`: add, list, disable, enable, change passwords, roles and quotas."""

from __future__ import annotations

from typing import Annotated

import typer

from r1serve.auth import QuotaLimits
from r1serve.cli import app
from r1serve.cli._accounts import (
    clean_errors,
    open_accounts,
    parse_limit,
    print_table,
    read_password,
    show_limit,
    show_time,
)

users_app = typer.Typer(help="Manage user accounts (works on the database directly).")
app.add_typer(users_app, name="users")

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]
Generate = Annotated[
    bool, typer.Option("--generate", help="Generate a random password and print it once.")
]


@users_app.command("add")
@clean_errors
def add(
    username: str,
    role: Annotated[str, typer.Option(help="admin or user.")] = "user",
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
) -> None:
    """Create a user (asks for the password unless told otherwise)."""
    password, generated = read_password(from_stdin=password_stdin, generate=generate)
    with open_accounts() as accounts:
        user = accounts.users.create(username, password, role)
    typer.echo(f"created {user.role} {user.username!r} (id {user.id})")
    if generated:
        typer.echo(f"password (shown only now): {password}")


@users_app.command("list")
@clean_errors
def list_users() -> None:
    """List users with their roles, state and own quotas."""
    with open_accounts() as accounts:
        users = accounts.users.list()
    rows = [
        (
            str(user.id),
            user.username,
            user.role,
            "disabled" if user.disabled else "active",
            show_limit(user.quota.requests_per_minute),
            show_limit(user.quota.tokens_per_day),
            show_time(user.created_at),
        )
        for user in users
    ]
    print_table(("id", "user", "role", "state", "requests/min", "tokens/day", "created"), rows)


@users_app.command("disable")
@clean_errors
def disable(username: str) -> None:
    """Disable a user: no logins, no API keys, web sessions end."""
    with open_accounts() as accounts:
        accounts.users.set_disabled(accounts.users.by_name(username).id, True)
    typer.echo(f"disabled {username!r}")


@users_app.command("enable")
@clean_errors
def enable(username: str) -> None:
    """Enable a disabled user."""
    with open_accounts() as accounts:
        accounts.users.set_disabled(accounts.users.by_name(username).id, False)
    typer.echo(f"enabled {username!r}")


@users_app.command("passwd")
@clean_errors
def passwd(
    username: str, password_stdin: PasswordStdin = False, generate: Generate = False
) -> None:
    """Set a user's password; their web sessions end."""
    password, generated = read_password(from_stdin=password_stdin, generate=generate)
    with open_accounts() as accounts:
        accounts.users.set_password(accounts.users.by_name(username).id, password)
    typer.echo(f"password of {username!r} changed; their web sessions have ended")
    if generated:
        typer.echo(f"password (shown only now): {password}")


@users_app.command("role")
@clean_errors
def role(username: str, new_role: Annotated[str, typer.Argument(help="admin or user.")]) -> None:
    """Make a user an admin or a plain user; their web sessions end."""
    with open_accounts() as accounts:
        user = accounts.users.set_role(accounts.users.by_name(username).id, new_role)
    typer.echo(f"{user.username!r} is now {user.role}")


@users_app.command("quota")
@clean_errors
def quota(
    username: str,
    requests_per_minute: Annotated[
        str | None, typer.Option("--requests-per-minute", "--rpm", help="A number or 'none'.")
    ] = None,
    tokens_per_day: Annotated[
        str | None, typer.Option("--tokens-per-day", help="A number or 'none'.")
    ] = None,
) -> None:
    """Show or set a user's quota; 'none' falls back to the server default."""
    with open_accounts() as accounts:
        user = accounts.users.by_name(username)
        limits = user.quota
        if requests_per_minute is not None or tokens_per_day is not None:
            limits = QuotaLimits(
                parse_limit(requests_per_minute, "requests per minute")
                if requests_per_minute is not None
                else user.quota.requests_per_minute,
                parse_limit(tokens_per_day, "tokens per day")
                if tokens_per_day is not None
                else user.quota.tokens_per_day,
            )
            accounts.quotas.set_user_quota(user.id, limits)
        defaults = accounts.quotas.default
    rpm = _own_or_default(limits.requests_per_minute, defaults.requests_per_minute)
    tokens = _own_or_default(limits.tokens_per_day, defaults.tokens_per_day)
    typer.echo(f"{user.username}: requests/min {rpm}, tokens/day (UTC) {tokens}")


def _own_or_default(own: int | None, default: int | None) -> str:
    if own is not None:
        return f"{own:,}"
    return f"{show_limit(default)} (server default)" if default is not None else "no limit"
