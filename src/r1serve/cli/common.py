"""Helpers every command uses: settings from flags + environment, one-line failures."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from pydantic import ValidationError

from r1serve.api.errors import validation_message
from r1serve.errors import R1ServeError
from r1serve.settings import Settings


def settings_from(flags: dict[str, Any]) -> Settings:
    """Settings from R1SERVE_* variables, with the given flags on top."""
    return Settings(**flags)


def fail(exc: R1ServeError | ValidationError | str, code: int = 2) -> NoReturn:
    """Print a one-line reason to stderr and exit non-zero."""
    if isinstance(exc, ValidationError):
        message, _ = validation_message(list(exc.errors()))  # type: ignore[arg-type]
        message = f"invalid setting: {message}"
    else:
        message = exc if isinstance(exc, str) else exc.message
    typer.echo(f"r1serve: error: {message}", err=True)
    raise typer.Exit(code)
