"""How a benchmark run is shown and saved: the machine, a rich table, the JSON document."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

from r1serve import __version__
from r1serve.client.bench import BenchConfig, BenchRun
from r1serve.client.bench_stats import Distribution, LevelSummary


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in psutil.getloadavg()]


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (the load average is recorded around each run)."""
    memory = psutil.virtual_memory()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "ram_total_bytes": memory.total,
        "ram_available_bytes": memory.available,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def bench_command(config: BenchConfig) -> list[str]:
    """The ``r1serve bench`` command that repeats this run (the API key hidden)."""
    bound = (
        ["--requests", str(config.requests)]
        if config.requests is not None
        else ["--duration", str(config.duration_s)]
    )
    command = ["r1serve", "bench", "--url", config.url]
    command += ["--model", config.model] if config.model else []
    command += ["--api-key", "***"] if config.api_key else []
    command += ["--endpoint", config.endpoint]
    command += ["--concurrency", ",".join(map(str, config.concurrency)), *bound]
    command += ["--prompts", config.prompts, "--max-tokens", str(config.max_tokens)]
    command += ["--temperature", str(config.temperature)]
    command += ["--ignore-eos"] if config.ignore_eos else []
    command += ["--warmup", str(config.warmup), "--seed", str(config.seed)]
    command += ["--timeout", str(config.timeout_s)]
    command += ["--extra-body", json.dumps(dict(config.extra_body))] if config.extra_body else []
    return command


def run_document(
    config: BenchConfig,
    run: BenchRun,
    *,
    started: datetime,
    machine: dict[str, Any],
) -> dict[str, Any]:
    """The JSON written by ``--output``: setup, machine, and every level's numbers."""
    settings = dataclasses.asdict(config)
    settings.pop("api_key")
    settings["extra_body"] = dict(config.extra_body)
    return {
        "tool": f"r1serve bench {__version__}",
        "date": started.astimezone(UTC).isoformat(timespec="seconds"),
        "command": bench_command(config),
        "server": {"url": config.url, "model": run.model, "served_models": run.served_models},
        "config": settings,
        "prompt_count": run.prompt_count,
        "warmup_errors": run.warmup_errors,
        "machine": machine,
        "levels": [level.to_dict() for level in run.levels],
        "notes": run.notes,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the document; parent folders are made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# Latency rows: (label, the level's distribution, seconds -> shown unit, digits).
_LATENCIES: tuple[tuple[str, str, float, int], ...] = (
    ("TTFT ms", "ttft", 1000.0, 0),
    ("TTFO ms", "ttfo", 1000.0, 0),
    ("TPOT ms", "tpot", 1000.0, 1),
    ("ITL ms", "itl", 1000.0, 1),
    ("latency s", "latency", 1.0, 2),
)


def _table(title: str, columns: list[tuple[str, str]]) -> Table:
    # no_wrap: a narrow terminal crops a cell (with "…") rather than breaking a number in two.
    table = Table(title=title, header_style="bold", title_justify="left")
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return table


def results_tables(levels: list[LevelSummary], title: str) -> list[Table]:
    """Throughput (one row per concurrency level) and latencies (p50/p95/p99 per level and
    metric): two tables, each well inside 100 columns, where one wide one would wrap."""
    throughput = _table(
        title,
        [("conc", "right"), ("ok", "right"), ("err", "right"), ("out tok/s", "right"),
         ("req/s", "right"), ("tok/req", "right"), ("client ms/req", "right"),
         ("client CPU %", "right")],
    )  # fmt: skip
    for level in levels:
        throughput.add_row(
            str(level.concurrency),
            str(level.completed),
            f"[red]{level.errors}[/red]" if level.errors else "0",
            f"{level.output_tokens_per_s:.1f}",
            f"{level.requests_per_s:.2f}",
            f"{level.mean_output_tokens:.0f}",
            f"{level.client_cpu_ms_per_request:.1f}",
            f"{level.client_cpu_percent:.1f}",
        )
    throughput.caption = "client: the benchmark's own CPU time"
    latency = _table(
        "latencies",
        [("conc", "right"), ("metric", "left"), ("p50", "right"), ("p95", "right"),
         ("p99", "right"), ("mean", "right")],
    )  # fmt: skip
    for level in levels:
        for n, (label, name, scale, digits) in enumerate(_LATENCIES):
            dist: Distribution | None = getattr(level, name)
            values = (
                [f"{v * scale:.{digits}f}" for v in (dist.p50, dist.p95, dist.p99, dist.mean)]
                if dist is not None
                else ["-"] * 4
            )
            last = n == len(_LATENCIES) - 1
            latency.add_row(str(level.concurrency) if n == 0 else "", label, *values,
                            end_section=last)  # fmt: skip
    return [throughput, latency]
