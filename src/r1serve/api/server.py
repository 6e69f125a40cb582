"""Run the HTTP server: load the model, print what was chosen and why, serve with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable

import uvicorn
from rich.console import Console
from rich.table import Table

from r1serve import __version__
from r1serve.api.app import create_app
from r1serve.api.protocol import HeaderTimeoutProtocol
from r1serve.api.security import check_bind
from r1serve.auth import close_accounts, open_accounts
from r1serve.engine.registry import build_engine
from r1serve.settings import Settings

log = logging.getLogger("r1serve")


def settings_table(settings: Settings, from_flags: Iterable[str] = ()) -> Table:
    """Every setting with its value and where the value came from."""
    flags = set(from_flags)
    table = Table(title="settings", show_header=True, header_style="bold")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    for name in type(settings).model_fields:
        env = f"R1SERVE_{name.upper()}"
        source = "flag" if name in flags else "env" if env in os.environ else "default"
        value = getattr(settings, name)
        shown = "(set)" if "password" in name and value else str(value)
        table.add_row(name, shown, source if source != "env" else f"env {env}")
    return table


def url_for(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}"


def run_server(settings: Settings, from_flags: Iterable[str] = ()) -> None:
    """Load the model, then serve until interrupted."""
    console = Console(stderr=True)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    console.print(f"[bold]r1serve {__version__}[/bold]")
    console.print(settings_table(settings, from_flags))
    check_bind(settings)  # before the slow part: a refused --no-auth fails at once
    with console.status("loading model…"):
        built = build_engine(settings)
    for line in built.summary:
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    accounts = open_accounts(settings)
    try:
        app = create_app(settings, built.engine, accounts)
        app.state.model_source = built.source  # what Ollama's /api/show and /api/tags describe
        url = url_for(settings.host, settings.port)
        announce(console, settings, url, accounts.generated_admin_password)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            http=HeaderTimeoutProtocol,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
        )
    finally:
        close_accounts(accounts)


def announce(
    console: Console, settings: Settings, url: str, generated_password: str | None
) -> None:
    """Where the server listens and how to log in; lines are never broken, so that the URL and
    a generated password stay whole to copy, also from a narrow terminal or a piped log."""
    console.print(
        f"serving on [bold]{url}[/bold] (chat page at /, OpenAI API at /v1)", soft_wrap=True
    )
    console.print(login_hint(settings, url, generated_password), soft_wrap=True)


def login_hint(settings: Settings, url: str, generated_password: str | None) -> str:
    """How to log in, printed at start-up; a generated admin password appears only here."""
    if not settings.auth:
        return "no-auth local mode: no login; everything runs as the admin account"
    if generated_password is not None:
        return (
            f"first start: log in at {url} as [bold]admin[/bold] with password "
            f"[bold]{generated_password}[/bold] (shown only now; change it after logging in)"
        )
    return (
        f"log in at {url}; API clients send 'Authorization: Bearer r1s-…' "
        "(create keys on the page or with `r1serve keys create`)"
    )
