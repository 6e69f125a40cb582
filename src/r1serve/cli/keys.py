"""`r1serve keys`: create, list and revoke API keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from r1serve.auth import QuotaLimits
from r1serve.cli import app
from r1serve.cli._accounts import (
    OPERATOR,
    clean_errors,
    open_accounts,
    parse_limit,
    print_table,
    show_limit,
    show_time,
)
from r1serve.errors import RequestError
from r1serve.storage import utcnow

keys_app = typer.Typer(help="Manage API keys (works on the database directly).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@clean_errors
def create(
    user: Annotated[str, typer.Option("--user", help="Owner of the key.")],
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Limit the key to this model (repeat).")
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Days until the key stops working.")
    ] = None,
    requests_per_minute: Annotated[
        str | None, typer.Option("--requests-per-minute", "--rpm", help="Key limit, or 'none'.")
    ] = None,
    tokens_per_day: Annotated[
        str | None, typer.Option("--tokens-per-day", help="Key limit, or 'none'.")
    ] = None,
) -> None:
    """Create an API key for a user and print it once."""
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    limits = QuotaLimits(
        parse_limit(requests_per_minute, "requests per minute"),
        parse_limit(tokens_per_day, "tokens per day"),
    )
    with open_accounts() as accounts:
        owner = accounts.users.by_name(user)
        created = accounts.keys.create(
            owner.id, name=name, models=model or None, expires_at=expires_at, quota=limits
        )
    typer.echo(created.key)
    typer.echo(
        f"API key {created.info.prefix}… (id {created.info.id}) for {owner.username!r}; "
        "it is shown only now, store it safely",
        err=True,
    )


@keys_app.command("list")
@clean_errors
def list_keys(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
) -> None:
    """List keys (never the keys themselves: their prefixes)."""
    with open_accounts() as accounts:
        owner_id = accounts.users.by_name(user).id if user else None
        keys = accounts.keys.list(OPERATOR, user_id=owner_id)
    now = utcnow()
    rows = [
        (
            str(key.id),
            key.prefix + "…",
            key.username,
            key.name or "-",
            ",".join(key.models) if key.models else "all",
            key.state(now),
            show_time(key.expires_at),
            show_limit(key.quota.requests_per_minute),
            show_limit(key.quota.tokens_per_day),
        )
        for key in keys
    ]
    headers = ("id", "prefix", "user", "name", "models", "state", "expires", "req/min", "tok/day")
    print_table(headers, rows)


@keys_app.command("revoke")
@clean_errors
def revoke(key: Annotated[str, typer.Argument(help="The key's id or its r1s-… prefix.")]) -> None:
    """Revoke a key; it fails on its next use."""
    with open_accounts() as accounts:
        if key.isdigit():
            key_id = int(key)
        elif key.startswith("r1s-"):
            key_id = accounts.keys.by_prefix(key.rstrip("…")[:12]).id
        else:
            raise RequestError(f"give a key id or its r1s- prefix, not {key!r}")
        revoked = accounts.keys.revoke(OPERATOR, key_id)
    typer.echo(f"revoked {revoked.prefix}… ({revoked.name or 'no name'}) of {revoked.username!r}")
