"""Run the HTTP server: load the model, print what was chosen and why, serve with uvicorn."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Iterable

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.table import Table
from sse_starlette.sse import AppStatus

from r1serve import __version__
from r1serve.api.app import create_app, end_streams
from r1serve.api.protocol import HeaderTimeoutProtocol
from r1serve.api.reply_bus import check_redis, shown_url
from r1serve.api.security import check_bind
from r1serve.auth import close_accounts, open_accounts
from r1serve.engine.models_file import build_served_models
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
        shown = _shown(name, value)
        table.add_row(name, shown, source if source != "env" else f"env {env}")
    return table


def _shown(name: str, value: object) -> str:
    """A setting's value as printed: passwords never (alone or inside a URL)."""
    if "password" in name and value:
        return "(set)"
    if name.endswith("_url") and isinstance(value, str):
        return shown_url(value)
    return str(value)


def url_for(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}"


def changed_settings(settings: Settings, from_flags: Iterable[str] = ()) -> list[str]:
    """One line per setting whose value is not its default: ``name = value (from)``."""
    flags = set(from_flags)
    lines = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        default = field.get_default(call_default_factory=True)
        env = f"R1SERVE_{name.upper()}"
        if value == default and name not in flags:
            continue
        source = "flag" if name in flags else f"env {env}" if env in os.environ else "default"
        if source == "default":
            continue  # a computed default (data_dir…): not something the user changed
        shown = _shown(name, value)
        lines.append(f"{name} = {shown} ({source})")
    return lines


def run_server(settings: Settings, from_flags: Iterable[str] = (), verbose: bool = False) -> None:
    """Load the model, then serve until interrupted.

    Start-up prints a short summary: the settings that differ from their defaults (all of them
    with ``verbose``), the model, engine and memory plan, then, once the server listens, the URL
    and how to log in, last, in a box. uvicorn's access log is off: r1serve logs each request
    once (``r1serve.access``), so the box is not pushed away by a second log of the same lines.
    """
    console = Console(stderr=True)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    console.print(f"[bold]r1serve {__version__}[/bold]")
    if verbose:
        console.print(settings_table(settings, from_flags))
    else:
        for line in changed_settings(settings, from_flags):
            console.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
    check_bind(settings)  # before the slow part: a refused --no-auth fails at once
    if settings.redis_url:
        check_redis(settings.redis_url)  # likewise a Redis that does not answer
    with console.status("loading models…"):
        models = build_served_models(settings)
    for model in models:
        if len(models) > 1:
            default = " (default)" if model.name == models.default else ""
            console.print(f"[bold]{model.name}[/bold]{default}", highlight=False)
        for line in model.summary:
            console.print(line, soft_wrap=True, markup=False, highlight=False)
    accounts = open_accounts(settings)
    try:
        app = create_app(settings, models, accounts)
        url = url_for(settings.host, settings.port)
        password = accounts.generated_admin_password
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            http=HeaderTimeoutProtocol,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
        )
        server = _AnnouncingServer(config, lambda: announce(console, settings, url, password))
        server.run()
    finally:
        close_accounts(accounts)


def freeze_startup_objects() -> None:
    """Keep what start-up made (modules, schemas, routes, the model's tokenizer: some 300,000
    objects) out of the cyclic garbage collector's full passes. Each pass walked them all, 150-210
    ms on this project's 2-core machine, with the event loop stopped: every stream,
    /health and the next 503 waited for it. What refcounting frees is freed as before.
    Then the heap that loading freed (the GGUF's vocabulary tables, parsed once) goes back to
    the system: about 30 MiB of resident memory with the embedded model."""
    gc.collect()
    gc.freeze()
    release_free_heap()


def release_free_heap() -> bool:
    """glibc's malloc_trim(0): free heap pages back to the system (False where there is none)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


class DrainingServer(uvicorn.Server):
    """uvicorn's server that, on shutdown, stops listening and then ends the app's streams
    well-formed (``end_streams``) before uvicorn waits for its connections to finish. Once the
    app has started, start-up's objects leave the garbage collector (freeze_startup_objects)."""

    def __init__(self, config: uvicorn.Config, *, freeze_gc: bool = True) -> None:
        super().__init__(config)
        # sse-starlette would cancel every SSE stream on SIGTERM itself, cutting it short.
        AppStatus.disable_automatic_graceful_drain()
        self._freeze_gc = freeze_gc  # False where the process is not only this server (tests)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._freeze_gc:
            freeze_startup_objects()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new requests while the streams end
        app = self.config.app
        if isinstance(app, FastAPI):
            try:
                await end_streams(app)
            except Exception:
                log.exception("ending streams at shutdown failed")
        await super().shutdown(sockets=sockets)


class _AnnouncingServer(DrainingServer):
    """uvicorn's server that prints the login box once it listens, after uvicorn's own lines."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def announce(
    console: Console, settings: Settings, url: str, generated_password: str | None
) -> None:
    """Where the server listens and how to log in, in a box; lines are never broken, so that
    the URL and a generated password stay whole to copy, also from a narrow terminal or a log."""
    lines = [
        f"r1serve is ready: {url}",
        "chat page at /, OpenAI API at /v1, Ollama API at /api",
        *login_hint(settings, url, generated_password),
    ]
    width = max(len(line) for line in lines)
    console.print("┌" + "─" * (width + 2) + "┐", soft_wrap=True, highlight=False)
    for line in lines:
        console.print(f"│ {line.ljust(width)} │", soft_wrap=True, markup=False, highlight=False)
    console.print("└" + "─" * (width + 2) + "┘", soft_wrap=True, highlight=False)


def login_hint(settings: Settings, url: str, generated_password: str | None) -> list[str]:
    """How to log in, printed at start-up; a generated admin password appears only here."""
    if not settings.auth:
        return ["no-auth local mode: no login; everything runs as the admin account"]
    if generated_password is not None:
        return [
            f"first start: log in at {url}",
            "user:     admin",
            f"password: {generated_password}",
            "(shown only now; change it after logging in, or later: r1serve users passwd admin)",
        ]
    return [
        f"log in at {url}; API clients send 'Authorization: Bearer r1s-…'",
        "(create keys on the page or with `r1serve keys create`)",
    ]
