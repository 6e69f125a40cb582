"""`r1serve bench`: benchmark any OpenAI-compatible server over a concurrency sweep."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from r1serve.cli import app
from r1serve.cli.console import exit_on_error, stderr_console, stdout_console
from r1serve.errors import ConfigError, R1ServeError

if TYPE_CHECKING:
    from rich.progress import TaskID

    from r1serve.client.bench_stats import RequestRecord


class _ProgressBar:
    """A rich progress bar per level, shown from the first level on; errors in its label."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        # A slow refresh keeps the bar's own thread from taking CPU the server needs.
        self.progress = Progress(
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr_console(),
            refresh_per_second=2,
        )
        self.task: TaskID | None = None
        self.name = ""
        self.errors = 0

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()

    def level_started(self, concurrency: int | None, requests: int | None) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.stop_task(self.task)
        self.name = "warm-up" if concurrency is None else f"concurrency {concurrency}"
        self.errors = 0
        self.task = self.progress.add_task(self.name, total=requests)

    def request_done(self, record: RequestRecord) -> None:
        if self.task is None:
            return
        self.errors += not record.ok
        name = f"{self.name} [red]({self.errors} errors)[/red]" if self.errors else self.name
        self.progress.update(self.task, advance=1, description=name)


def _extra_body(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--extra-body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("--extra-body must be a JSON object")
    return value


@app.command()
def bench(
    url: Annotated[str, typer.Option(help="Base URL of the server.")] = "http://127.0.0.1:8000",
    model: Annotated[
        str | None,
        typer.Option(help="Model id to request.", show_default="first of /v1/models"),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key (or R1SERVE_API_KEY).", show_default=False)
    ] = None,
    endpoint: Annotated[str, typer.Option(help="chat or completions.")] = "chat",
    concurrency: Annotated[
        str, typer.Option(help="Levels to sweep; each keeps that many requests in flight.")
    ] = "1,4,16",
    requests: Annotated[
        int | None, typer.Option(help="Requests per level.", show_default="32")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds per level, instead of --requests.")
    ] = None,
    prompts: Annotated[
        str, typer.Option(help="Prompt set: chat, reasoning, or a .jsonl file.")
    ] = "chat",
    max_tokens: Annotated[int, typer.Option(help="Most output tokens per request.")] = 128,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.0,
    ignore_eos: Annotated[
        bool, typer.Option(help="Ask the server to ignore EOS (vLLM's extra field).")
    ] = False,
    warmup: Annotated[int, typer.Option(help="Unmeasured requests before the sweep.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the prompt order.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 600.0,
    extra_body: Annotated[
        str | None, typer.Option(help="JSON object merged into every request body.")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """Measure TTFT, TTFO, TPOT, ITL, latency and throughput of an OpenAI-compatible server."""
    from r1serve.client.bench import Bench, BenchConfig, all_failed, load_prompts, parse_concurrency
    from r1serve.client.bench_report import (
        load_average,
        machine_info,
        results_tables,
        run_document,
        write_json,
    )

    err = stderr_console()
    with exit_on_error():
        if endpoint not in ("chat", "completions"):
            raise ConfigError(f"--endpoint must be chat or completions, got {endpoint!r}")
        config = BenchConfig(
            url=url,
            model=model,
            api_key=api_key or os.environ.get("R1SERVE_API_KEY"),
            endpoint="chat" if endpoint == "chat" else "completions",
            concurrency=parse_concurrency(concurrency),
            requests=requests if requests is not None or duration is not None else 32,
            duration_s=duration,
            prompts=prompts,
            max_tokens=max_tokens,
            temperature=temperature,
            ignore_eos=ignore_eos,
            warmup=warmup,
            seed=seed,
            timeout_s=timeout,
            extra_body=_extra_body(extra_body),
        )
        runner = Bench(config, load_prompts(prompts))
        machine = machine_info()
        machine["load_average_start"] = load_average()
        started = datetime.now()
        bar = _ProgressBar()
        try:
            run = asyncio.run(runner.run(bar))
        finally:
            bar.close()
        machine["load_average_end"] = load_average()
        out = stdout_console()
        for table in results_tables(run.levels, f"{run.model} at {url}"):
            out.print(table)
        for level in run.levels:
            for message in level.error_messages:
                err.print(f"concurrency {level.concurrency}: {message}", style="red", markup=False)
        for note in run.notes:
            err.print(f"note: {note}", markup=False)
        if output is not None:
            document = run_document(config, run, started=started, machine=machine)
            write_json(output, document)
            err.print(f"results written to {output}")
        if not any(level.completed for level in run.levels):
            raise R1ServeError(all_failed(run, config.api_key))
