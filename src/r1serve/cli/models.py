"""`r1serve models`: what each catalog model needs, what fits this machine, and any model's size."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from r1serve.catalog.catalog import (
    CatalogEntry,
    Recommendation,
    fitting_precisions,
    load_catalog,
    recommend,
)
from r1serve.catalog.estimate import (
    PRECISIONS,
    RUNTIME_OVERHEAD_BYTES,
    MemoryEstimate,
    Precision,
    estimate_memory,
)
from r1serve.catalog.hardware import MemoryDevice, detect_devices, model_home
from r1serve.catalog.hub import hub_endpoints
from r1serve.catalog.sources import SourceEstimate, estimate_source
from r1serve.catalog.store import lookup
from r1serve.cli import app
from r1serve.cli.console import exit_on_error, format_bytes, format_count, stdout_console
from r1serve.settings import Settings

DEFAULT_CONTEXT = 32768  # DeepSeek's suggested generation limit for R1 reasoning traces
SERVED_PRECISION: Precision = "bf16"  # r1serve computes in bf16 or fp32; GGUFs are dequantized


def _device_line(device: MemoryDevice, context: int) -> str:
    return (
        f"Memory: {device.label}, {format_bytes(device.total_bytes)} total, "
        f"{format_bytes(device.free_bytes)} free. Context: {context:,} tokens (KV cache in bf16)."
    )


def _cell(estimate: MemoryEstimate, precision: Precision, budget: int) -> Text:
    gib = 1 << 30
    weights, total = estimate.weight_bytes[precision], estimate.total_bytes(precision)
    text = f"{weights / gib:.1f} → {total / gib:.1f}"
    if total <= budget:
        return Text(f"{text} ✓", style="green")
    return Text(text, style="dim")


def _params(estimate: MemoryEstimate) -> str:
    total, active = estimate.parameters.total, estimate.parameters.active
    if active == total:
        return format_count(total)
    return f"{format_count(total)} ({format_count(active)} active)"


def _catalog_table(entries: tuple[CatalogEntry, ...], context: int, budget: int) -> Table:
    table = Table(header_style="bold")
    table.add_column("Model")
    table.add_column("Params", justify="right")
    table.add_column("KV /1k tok", justify="right")
    for precision in PRECISIONS:
        table.add_column(f"{precision} GiB", justify="right")
    for entry in entries:
        estimate = estimate_memory(entry.architecture, context)
        table.add_row(
            entry.repo_id,
            _params(estimate),
            format_bytes(estimate.kv_bytes_per_1k_tokens),
            *(_cell(estimate, p, budget) for p in PRECISIONS),
        )
    return table


def _recommendation_line(choice: Recommendation | None, context: int) -> str:
    if choice is None:
        return f"Nothing in the catalog fits with {context:,} tokens of context; try --context."
    return (
        f"Recommended: {choice.repo_id} in {choice.precision} "
        f"({format_bytes(choice.total_bytes)} of {format_bytes(choice.budget_bytes)} "
        f"with {context:,} tokens of context)."
    )


def _serving_line(
    choice: Recommendation | None, serving: Recommendation | None, device: MemoryDevice
) -> str | None:
    """What r1serve itself can serve, when the recommendation needs a quantized runtime."""
    if choice is None or choice.precision == SERVED_PRECISION:
        return None
    head = (
        f"{choice.precision} needs a quantized runtime (e.g. llama.cpp): r1serve computes in bf16 "
        "or float32 (a GGUF is dequantized when loaded)"
    )
    if serving is None:
        return f"{head}, and nothing fits here in bf16."
    how = "its default on CUDA"
    if device.kind != "cuda":
        how = "--dtype bfloat16; float32, the CPU default, takes twice"
    return (
        f"{head}. The largest it serves here: {serving.repo_id} in bf16 ({how}), "
        f"{format_bytes(serving.total_bytes)}."
    )


def _estimate_json(estimate: MemoryEstimate, budget: int) -> dict[str, Any]:
    return {
        "parameters": estimate.parameters.total,
        "active_parameters": estimate.parameters.active,
        "kv_bytes_per_1k_tokens": estimate.kv_bytes_per_1k_tokens,
        "weight_bytes": dict(estimate.weight_bytes),
        "total_bytes": {p: estimate.total_bytes(p) for p in PRECISIONS},
        "fits": fitting_precisions(estimate, budget),
    }


def _device_json(device: MemoryDevice) -> dict[str, Any]:
    return {
        "kind": device.kind,
        "index": device.index,
        "name": device.name,
        "total_bytes": device.total_bytes,
        "free_bytes": device.free_bytes,
    }


def show_catalog(device: MemoryDevice, context: int, as_json: bool) -> None:
    """Print the catalog with fit marks and a recommendation for ``device``."""
    entries = load_catalog()
    budget = device.free_bytes
    choice = recommend(entries, budget, context)
    serving = recommend(entries, budget, context, (SERVED_PRECISION,))
    if as_json:
        models = [
            {"repo_id": e.repo_id, "family": e.family, "note": e.note}
            | _estimate_json(estimate_memory(e.architecture, context), budget)
            for e in entries
        ]
        recommendation: dict[str, Any] | None = None
        if choice is not None:
            recommendation = {"repo_id": choice.repo_id, "precision": choice.precision}
            recommendation["total_bytes"] = choice.total_bytes
        served: dict[str, Any] | None = None
        if serving is not None:
            served = {"repo_id": serving.repo_id, "precision": serving.precision}
            served["total_bytes"] = serving.total_bytes
        document = {"device": _device_json(device), "context": context, "models": models}
        document |= {"recommendation": recommendation, "r1serve_recommendation": served}
        typer.echo(json.dumps(document, indent=2))
        return
    console = stdout_console()
    console.print(_device_line(device, context))
    console.print(_catalog_table(entries, context, budget))
    console.print(
        f"Cells: weights → total in GiB (total = weights + KV cache for {context:,} tokens + "
        f"{format_bytes(RUNTIME_OVERHEAD_BYTES)} runtime).\n"
        f"✓: fits in the {format_bytes(budget)} free. int8/int4 include per-block scales."
    )
    console.print(_recommendation_line(choice, context))
    line = _serving_line(choice, serving, device)
    if line is not None:
        console.print(line)


def show_estimate(result: SourceEstimate, device: MemoryDevice, as_json: bool) -> None:
    """Print what one model needs and whether it fits ``device``."""
    estimate, budget = result.memory, device.free_bytes
    stored_total = None
    if result.stored_bytes is not None:
        stored_total = result.stored_bytes + estimate.kv_bytes_at_context + RUNTIME_OVERHEAD_BYTES
    if as_json:
        document = {"source": result.source, "kind": result.kind, "context": estimate.context}
        document |= _estimate_json(estimate, budget)
        document |= {"stored_format": result.stored_format, "stored_bytes": result.stored_bytes}
        document |= {"stored_total_bytes": stored_total, "device": _device_json(device)}
        typer.echo(json.dumps(document, indent=2))
        return
    console = stdout_console()
    arch = result.architecture
    console.print(f"{result.source} ({result.kind}, {arch.model_type or 'unknown architecture'})")
    console.print(
        f"Parameters: {_params(estimate)}; KV cache: "
        f"{format_bytes(estimate.kv_bytes_per_1k_tokens)} per 1,000 tokens"
    )
    console.print(_device_line(device, estimate.context))
    table = Table(header_style="bold")
    for column in ("Precision", "Weights", "KV cache", "Total", "Fits"):
        table.add_column(column, justify="left" if column == "Precision" else "right")
    kv = format_bytes(estimate.kv_bytes_at_context)
    rows: list[tuple[str, int, int]] = [
        (p, estimate.weight_bytes[p], estimate.total_bytes(p)) for p in PRECISIONS
    ]
    if result.stored_bytes is not None and stored_total is not None:
        rows.append((f"as stored ({result.stored_format})", result.stored_bytes, stored_total))
    for label, weights, total in rows:
        fits = Text("yes", style="green") if total <= budget else Text("no", style="red")
        table.add_row(label, format_bytes(weights), kv, format_bytes(total), fits)
    console.print(table)


@app.command()
def models(
    estimate: str | None = typer.Option(
        None,
        "--estimate",
        metavar="REPO_OR_DIR",
        help="Size this model instead: a local HF folder, a .gguf file, a name from `r1serve ls`"
        " or a hub repo id (its config.json is fetched).",
    ),
    context: int = typer.Option(
        DEFAULT_CONTEXT, "--context", min=1, help="Tokens of KV cache to plan for."
    ),
    revision: str = typer.Option("main", "--revision", help="Hub revision for --estimate."),
    mirror: list[str] = typer.Option(
        [], "--mirror", metavar="URL", help="Hub mirror for --estimate (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show what each catalog model needs, what fits this machine, and what to run."""
    with exit_on_error():
        device = model_home(detect_devices())
        if estimate is None:
            show_catalog(device, context, as_json)
            return
        data_dir = Settings().data_dir
        result = estimate_source(
            estimate,
            context,
            endpoints=hub_endpoints(mirror),
            revision=revision,
            store_lookup=lambda name: lookup(name, data_dir),
        )
        show_estimate(result, device, as_json)
