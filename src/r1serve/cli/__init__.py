"""The ``r1serve`` command: one module per command; a command parses and delegates."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="r1serve",
    help="Serve DeepSeek-R1 distills and other Hugging Face causal LMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Serve DeepSeek-R1 distills and other Hugging Face causal LMs."""


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from r1serve.cli import bench, chat, keys, models, pull, serve, store, users  # noqa: F401


def main() -> None:
    _register()
    app()
