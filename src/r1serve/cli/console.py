"""Output helpers shared by the model commands: consoles, sizes, and errors as one line."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from r1serve.cli.common import fail
from r1serve.errors import ConfigError, R1ServeError


def stdout_console() -> Console:
    """Console for results; wide enough for the model table when not on a terminal."""
    return Console(width=shutil.get_terminal_size((140, 40)).columns, highlight=False)


def stderr_console() -> Console:
    """Console for progress and notes, so stdout stays parseable."""
    return Console(stderr=True, highlight=False)


def format_bytes(size: float) -> str:
    """Binary units: ``512 B``, ``28.0 KiB``, ``14.6 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_count(count: int) -> str:
    """Parameter counts as people write them: ``135M``, ``1.78B``, ``671B``."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            value = count / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{digits}f}{suffix}"
    return str(count)


def confirm(question: str, default: bool) -> bool:
    """Ask on stderr; end of input or Ctrl-C counts as no."""
    try:
        return typer.confirm(question, default=default, err=True)
    except typer.Abort:
        return False


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn an r1serve error into one line on stderr and a non-zero exit (2 for bad config)."""
    try:
        yield
    except R1ServeError as exc:
        fail(" ".join(exc.message.split()), 2 if isinstance(exc, ConfigError) else 1)
    except OSError as exc:  # the file system said no (permissions, disk full) outside a download
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}", 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
