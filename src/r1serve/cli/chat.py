"""`r1serve chat`: talk to a running server, or load the model in this process."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from r1serve.cli import app
from r1serve.cli.common import fail, settings_from
from r1serve.errors import R1ServeError

HELP = (
    "Type a message; Ctrl+C stops a reply, /reset starts over, /exit, Ctrl-D or Ctrl+C at an "
    "empty prompt quits."
)


@app.command()
def chat(
    message: Annotated[str | None, typer.Argument(help="Ask once and exit.")] = None,
    url: Annotated[str, typer.Option(help="Server to talk to.")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option(help="API key (or R1SERVE_API_KEY).", show_default=False)
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Served model id; with --local, the model to load.")
    ] = None,
    local: Annotated[bool, typer.Option(help="Load the model here instead of a server.")] = False,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per reply.")] = None,
    show_reasoning: Annotated[
        bool | None,
        typer.Option(
            help="Show the reasoning (dimmed in a terminal; piped, it goes to stderr unless "
            "this is given, then to stdout).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Chat in the terminal with streaming output; reasoning is shown dimmed.

    Piped (`r1serve chat "q" > answer.txt`), stdout gets only the answer.
    """
    from r1serve.client.chat import ChatSession, LocalBackend, Piece, RemoteBackend

    _take_ctrl_c()
    console = Console(highlight=False)
    notes = Console(stderr=True, highlight=False)
    piped = not console.is_terminal
    # Where reasoning goes: dimmed beside the answer in a terminal; piped, to stderr by default.
    thoughts: Console | None = notes if piped and not show_reasoning else console
    if show_reasoning is False:
        thoughts = None
    options: dict[str, Any] = {
        k: v
        for k, v in {"temperature": temperature, "max_tokens": max_tokens}.items()
        if v is not None
    }
    try:
        if local:
            backend: Any = LocalBackend(_local_service(model))
        else:
            key = api_key or os.environ.get("R1SERVE_API_KEY")
            backend = RemoteBackend(url, key, model)
        session = ChatSession(backend, system=system, options=options)
        state = {"thinking": False}

        def show(piece: Piece) -> None:
            if piece.reasoning and thoughts is not None:
                state["thinking"] = True
                thoughts.print(piece.reasoning, style="dim italic", end="", markup=False)
            if piece.content:
                if state["thinking"]:
                    if thoughts is not None:
                        thoughts.print("\n")
                    state["thinking"] = False
                console.print(piece.content, end="", markup=False)

        if message is not None:
            reply = session.ask(message, show)
            console.print()
            if reply.finish_reason == "interrupted":
                raise typer.Exit(130)
            return
        notes.print(HELP, style="dim")
        while True:
            try:
                text = console.input("[bold]> [/bold]")
            except EOFError:
                break
            if text.strip() in ("/exit", "/quit"):
                break
            if text.strip() == "/reset":
                session.reset()
                continue
            if text.strip():
                state["thinking"] = False
                reply = session.ask(text, show)
                console.print()
                notes.print(f"[dim]({reply.finish_reason})[/dim]")
    except R1ServeError as exc:
        fail(exc)
    except KeyboardInterrupt:
        console.print()


def _take_ctrl_c() -> None:
    """Ctrl+C stops a reply even when this process was started with SIGINT ignored.

    A command a script starts in the background (``cmd &``) ignores SIGINT, and passes that on
    to every process it starts (a test runner's children too); Python then never raises
    KeyboardInterrupt and a reply would run to its end. In a terminal, Ctrl+C comes from the
    user at the keyboard, so take it back.
    """
    if sys.stdin.isatty() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _local_service(model: str | None) -> Any:
    from r1serve.api.service import CompletionService
    from r1serve.engine.registry import build_engine

    settings = settings_from({"model": model} if model else {})
    built = build_engine(settings)
    return CompletionService(
        built.engine,
        reasoning_format=settings.reasoning_format,
        default_sampling=dict(built.engine.default_sampling),
    )
