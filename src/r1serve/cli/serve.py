"""`r1serve serve`: load a model and serve it over HTTP."""

from __future__ import annotations

from r1serve.cli import app


@app.command()
def serve() -> None:
    """Serve a model over the OpenAI-compatible API and the chat page."""
    raise SystemExit("not wired yet")
