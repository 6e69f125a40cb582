"""What the `users` and `keys` commands share: the database from settings, errors, input."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import ParamSpec, TypeVar

import typer

from r1serve.auth import AuthService, Principal
from r1serve.auth.passwords import generate_password
from r1serve.cli.common import fail
from r1serve.errors import R1ServeError
from r1serve.settings import Settings
from r1serve.storage import Database

P = ParamSpec("P")
R = TypeVar("R")

# The CLI works on the database directly, with the operator's full rights.
OPERATOR = Principal(user_id=0, username="operator", role="admin", method="local")


@contextmanager
def open_accounts() -> Iterator[AuthService]:
    """The account services over the database named by the settings (migrated first)."""
    settings = Settings()
    database = Database.open(settings)
    try:
        yield AuthService(settings, database)
    finally:
        database.close()


def clean_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print r1serve errors as one line and exit 1 instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except R1ServeError as exc:
            fail(exc, code=2 if exc.status_code >= 500 else 1)

    return run


def read_password(*, from_stdin: bool, generate: bool) -> tuple[str, bool]:
    """A new password from stdin, a hidden prompt, or generated; and whether it was generated."""
    if generate:
        return generate_password(), True
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return str(password), False


def parse_limit(value: str | None, name: str) -> int | None:
    """A quota option: a positive number, or "none" for no limit."""
    if value is None or value.strip().lower() in ("none", ""):
        return None
    try:
        number = int(value.replace("_", "").replace(",", ""))
    except ValueError:
        raise typer.BadParameter(f"{name} must be a number or 'none', got {value!r}") from None
    if number < 1:
        raise typer.BadParameter(f"{name} must be at least 1, or 'none'")
    return number


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; plain text, so it pipes into grep and awk."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def show_limit(value: int | None) -> str:
    """A limit for a table cell."""
    return "-" if value is None else f"{value:,}"


def show_time(value: datetime | None) -> str:
    """A timestamp for a table cell, in UTC to the minute."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")
