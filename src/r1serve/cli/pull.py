"""`r1serve pull REPO[:FILE|:QUANT]`, `pull NAME:QUANT`: download a model into the local store."""

from __future__ import annotations

import sys
from types import TracebackType

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from r1serve.catalog.pull import PullOptions, PullPlan, parse_pull_target, pull
from r1serve.cli import app
from r1serve.cli.console import confirm, exit_on_error, format_bytes, stderr_console
from r1serve.settings import Settings


class RichTransferProgress:
    """One rich progress bar per file, on stderr."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started = False

    def __enter__(self) -> RichTransferProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._started:
            self._progress.stop()

    def start_file(self, path: str, total: int, done: int) -> None:
        """Show (or reset, after a restart from zero) the bar of ``path``."""
        if not self._started:  # started late so the confirmation prompt is not drawn over
            self._progress.start()
            self._started = True
        task = self._tasks.get(path)
        if task is None:
            self._tasks[path] = self._progress.add_task(path, total=total, completed=done)
        else:
            self._progress.update(task, total=total, completed=done)

    def advance(self, path: str, nbytes: int) -> None:
        """Move the bar of ``path`` on."""
        self._progress.advance(self._tasks[path], nbytes)

    def finish_file(self, path: str) -> None:
        """Mark ``path`` verified."""
        task = self._tasks.get(path)
        if task is not None:
            self._progress.update(task, description=f"{path} ✓")

    def note(self, message: str) -> None:
        """Print a one-line note above the bars."""
        self._progress.console.print(f"[yellow]{message}[/yellow]")


def _interactive() -> bool:
    """Whether someone can answer a prompt."""
    return sys.stdin.isatty()


def _confirm(plan: PullPlan, console: Console) -> bool:
    console.print(
        f"{plan.repo_id}@{plan.revision} ({plan.commit[:12]}) from {plan.endpoint}: "
        f"{len(plan.downloads)} files, {format_bytes(plan.bytes_needed)} to download "
        f"into {plan.folder}"
    )
    return confirm("Download?", default=True)


@app.command("pull")
def pull_command(
    target: str = typer.Argument(
        ...,
        metavar="REPO[:FILE|:QUANT] | NAME[:QUANT]",
        help="Hub repo id; REPO:FILE pulls one GGUF file of the repo, REPO:QUANT the one whose"
        " name carries that quantization; NAME:QUANT a catalog model (see `r1serve models`) from"
        " its GGUF repo, e.g. deepseek-r1-distill-qwen-7b:q4_k_m.",
    ),
    gguf: str | None = typer.Option(
        None,
        "--gguf",
        metavar="QUANT",
        help="Pull the repo's GGUF file for this quantization (Q4_K_M, Q5_K_M, Q8_0...).",
    ),
    revision: str = typer.Option("main", "--revision", help="Branch, tag or commit."),
    mirror: list[str] = typer.Option(
        [],
        "--mirror",
        metavar="URL",
        help="Hub mirror to try first (repeatable; tried in order, then HF_ENDPOINT).",
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Also download pickled .bin weights (they can run code)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before downloading."),
) -> None:
    """Download a model (safetensors or a GGUF quantization) with resume and checksums."""
    with exit_on_error():
        console = stderr_console()
        parsed = parse_pull_target(target, gguf)
        options = PullOptions(revision=revision, mirrors=tuple(mirror), allow_pickle=allow_pickle)
        # Ask only when someone can answer; scripts and --yes go straight on.
        ask = not yes and _interactive()
        with RichTransferProgress(console) as progress:
            result = pull(
                parsed,
                Settings().data_dir,
                options,
                progress,
                confirm=(lambda plan: _confirm(plan, console)) if ask else None,
            )
        fetched = len(result.downloaded)
        console.print(
            f"{result.name}: {len(result.files)} files in {result.folder} "
            f"({fetched} downloaded from {result.endpoint}, {len(result.files) - fetched} present)"
        )
        if result.skipped:
            shown = ", ".join(result.skipped[:5]) + (" ..." if len(result.skipped) > 5 else "")
            console.print(f"skipped {len(result.skipped)} files: {shown}")
        typer.echo(result.name)
