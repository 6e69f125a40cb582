"""`r1serve models`: GGUF quants and bf16 per catalog model, what fits, what to pull and serve."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from r1serve.catalog.catalog import (
    CatalogEntry,
    GgufRecommendation,
    Recommendation,
    fitting_precisions,
    load_catalog,
    recommend,
    recommend_gguf,
)
from r1serve.catalog.estimate import (
    PRECISIONS,
    RUNTIME_OVERHEAD_BYTES,
    MemoryEstimate,
    Precision,
    estimate_memory,
)
from r1serve.catalog.hardware import (
    MemoryDevice,
    detect_devices,
    detect_llamacpp_devices,
    model_home,
)
from r1serve.catalog.hub import hub_endpoints
from r1serve.catalog.quants import (
    GGUF_QUANTS,
    SHOWN_QUANTS,
    LlamaCppMemory,
    llamacpp_memory,
    quant_memory,
)
from r1serve.catalog.sources import SourceEstimate, estimate_source
from r1serve.catalog.store import lookup
from r1serve.cli import app
from r1serve.cli.console import exit_on_error, format_bytes, format_count, stdout_console
from r1serve.settings import Settings

DEFAULT_CONTEXT = 32768  # DeepSeek's suggested generation limit for R1 reasoning traces
TRANSFORMERS_PRECISION: Precision = "bf16"  # what the transformers engine computes in
GIB = 1 << 30


def _device_line(label: str, device: MemoryDevice, context: int | None = None) -> str:
    line = (
        f"{label}: {device.label}, {format_bytes(device.total_bytes)} total, "
        f"{format_bytes(device.free_bytes)} free."
    )
    return line + (f" Context: {context:,} tokens (KV cache in 16 bits)." if context else "")


def _fit_text(weights: int, total: int, budget: int) -> Text:
    text = f"{weights / GIB:.1f} → {total / GIB:.1f}"
    return Text(f"{text} ✓", style="green") if total <= budget else Text(text, style="dim")


def _params(estimate: MemoryEstimate) -> str:
    total, active = estimate.parameters.total, estimate.parameters.active
    if active == total:
        return format_count(total)
    return f"{format_count(total)} ({format_count(active)} active)"


@dataclass(frozen=True, slots=True)
class Machine:
    """Where each engine would put a model: llama.cpp's device, and the transformers one."""

    llamacpp: MemoryDevice
    transformers: MemoryDevice

    @property
    def same_device(self) -> bool:
        """Whether both engines would use the same device (then one line describes it)."""
        left, right = self.llamacpp, self.transformers
        return (left.kind, left.index, left.name) == (right.kind, right.index, right.name)

    @property
    def llamacpp_gpu(self) -> bool:
        """Whether llama.cpp offloads to a GPU here (its CUDA context then counts)."""
        return self.llamacpp.kind == "cuda"


def detect_machine() -> Machine:
    """The devices of this machine, as each engine sees them."""
    return Machine(model_home(detect_llamacpp_devices()), model_home(detect_devices()))


def _catalog_table(entries: tuple[CatalogEntry, ...], context: int, machine: Machine) -> Table:
    table = Table(header_style="bold")
    for column in ("Model", "Params", "KV /1k tok"):
        table.add_column(column, justify="left" if column == "Model" else "right")
    for quant in SHOWN_QUANTS:
        table.add_column(f"{quant} GiB", justify="right")
    table.add_column(f"{TRANSFORMERS_PRECISION} GiB", justify="right")
    for entry in entries:
        estimate = estimate_memory(entry.architecture, context)
        gguf_cells = []
        for quant in SHOWN_QUANTS:
            memory = quant_memory(entry.architecture, quant, context, gpu=machine.llamacpp_gpu)
            gguf_cells.append(
                _fit_text(memory.weight_bytes, memory.total_bytes, machine.llamacpp.free_bytes)
            )
        table.add_row(
            entry.repo_id,
            _params(estimate),
            format_bytes(estimate.kv_bytes_per_1k_tokens),
            *gguf_cells,
            _fit_text(
                estimate.weight_bytes[TRANSFORMERS_PRECISION],
                estimate.total_bytes(TRANSFORMERS_PRECISION),
                machine.transformers.free_bytes,
            ),
        )
    return table


def _recommendation_line(choice: GgufRecommendation | None, context: int) -> str:
    if choice is None:
        return f"Nothing in the catalog fits with {context:,} tokens of context; try --context."
    return (
        f"Recommended: {choice.entry.repo_id} as GGUF {choice.quant} on r1serve's llama.cpp "
        f"engine ({format_bytes(choice.memory.total_bytes)} of "
        f"{format_bytes(choice.budget_bytes)} with {context:,} tokens of context):\n"
        f"  r1serve pull {choice.pull_name} && r1serve serve --model {choice.pull_name}"
    )


def _transformers_line(serving: Recommendation | None, device: MemoryDevice) -> str:
    head = "On the transformers engine (HF safetensors, --engine transformers)"
    if serving is None:
        return f"{head} nothing fits here in bf16."
    how = "--dtype bfloat16; float32 takes twice"
    if device.kind == "cuda":
        how = "its default on CUDA"
    return f"{head}: {serving.repo_id} in bf16 ({how}), {format_bytes(serving.total_bytes)}."


def _gguf_json(entry: CatalogEntry, context: int, machine: Machine) -> dict[str, Any]:
    quants: dict[str, Any] = {}
    for quant in GGUF_QUANTS:
        memory = quant_memory(entry.architecture, quant, context, gpu=machine.llamacpp_gpu)
        quants[quant] = {
            "weight_bytes": memory.weight_bytes,
            "kv_bytes": memory.kv_bytes,
            "runtime_bytes": memory.runtime_bytes,
            "total_bytes": memory.total_bytes,
            "fits": memory.total_bytes <= machine.llamacpp.free_bytes,
            "pull": f"{entry.short_name}:{quant.lower()}",
        }
    return quants


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


def _recommendation_json(choice: GgufRecommendation | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    return {
        "repo_id": choice.entry.repo_id,
        "engine": "llamacpp",
        "quant": choice.quant,
        "gguf_repo": choice.entry.gguf_repo,
        "total_bytes": choice.memory.total_bytes,
        "pull": choice.pull_name,
    }


def _catalog_json(
    entries: tuple[CatalogEntry, ...], context: int, machine: Machine
) -> dict[str, Any]:
    budget = machine.transformers.free_bytes
    models = [
        {"repo_id": e.repo_id, "family": e.family, "note": e.note}
        | {"short_name": e.short_name, "gguf_repo": e.gguf_repo}
        | _estimate_json(estimate_memory(e.architecture, context), budget)
        | {"gguf": _gguf_json(e, context, machine)}
        for e in entries
    ]
    choice = recommend_gguf(entries, machine.llamacpp.free_bytes, context, gpu=machine.llamacpp_gpu)
    serving = recommend(entries, budget, context, (TRANSFORMERS_PRECISION,))
    transformers: dict[str, Any] | None = None
    if serving is not None:
        transformers = {"repo_id": serving.repo_id, "precision": serving.precision}
        transformers["total_bytes"] = serving.total_bytes
    return {
        "device": _device_json(machine.llamacpp),
        "transformers_device": _device_json(machine.transformers),
        "context": context,
        "models": models,
        # r1serve serves the GGUF pick itself now, so both keys name it.
        "recommendation": _recommendation_json(choice),
        "r1serve_recommendation": _recommendation_json(choice),
        "transformers_recommendation": transformers,
    }


def show_catalog(machine: Machine, context: int, as_json: bool) -> None:
    """Print the catalog with fit marks and a recommendation for ``machine``."""
    entries = load_catalog()
    if as_json:
        typer.echo(json.dumps(_catalog_json(entries, context, machine), indent=2))
        return
    console = stdout_console()
    console.print(_device_line("llama.cpp engine (GGUF)", machine.llamacpp, context))
    if not machine.same_device:
        console.print(_device_line("transformers engine (bf16)", machine.transformers))
    console.print(_catalog_table(entries, context, machine))
    console.print(
        f"Cells: weights → total in GiB. GGUF (llama.cpp engine): weights as llama-quantize "
        f"types them + f16 KV cache for {context:,} tokens + llama.cpp's compute buffers, "
        f"vocabulary and process. bf16 (transformers engine): weights + KV cache + "
        f"{format_bytes(RUNTIME_OVERHEAD_BYTES)} runtime.\n"
        f"✓: fits in the free memory of the engine's device."
    )
    budget = machine.llamacpp.free_bytes
    choice = recommend_gguf(entries, budget, context, gpu=machine.llamacpp_gpu)
    console.print(_recommendation_line(choice, context))
    serving = recommend(
        entries, machine.transformers.free_bytes, context, (TRANSFORMERS_PRECISION,)
    )
    console.print(_transformers_line(serving, machine.transformers))


def _memory_json(memory: LlamaCppMemory, budget: int) -> dict[str, Any]:
    return {
        "weight_bytes": memory.weight_bytes,
        "kv_bytes": memory.kv_bytes,
        "runtime_bytes": memory.runtime_bytes,
        "total_bytes": memory.total_bytes,
        "fits": memory.total_bytes <= budget,
    }


def _estimate_rows(result: SourceEstimate, machine: Machine) -> list[tuple[str, int, int, int]]:
    """(label, weights, KV cache, total) per way of serving ``result``, llama.cpp first."""
    arch, context, gpu = result.architecture, result.memory.context, machine.llamacpp_gpu
    rows = []
    if result.stored_bytes is not None:
        stored = llamacpp_memory(
            arch, result.stored_bytes, context, gpu=gpu, repacked_bytes=result.stored_repacked_bytes
        )
        label = f"as stored ({result.stored_format}), llama.cpp"
        rows.append((label, stored.weight_bytes, stored.kv_bytes, stored.total_bytes))
    for quant in SHOWN_QUANTS:
        memory = quant_memory(arch, quant, context, gpu=gpu)
        rows.append((f"GGUF {quant}, llama.cpp", *_parts(memory)))
    estimate = result.memory
    rows.append(
        (
            f"{TRANSFORMERS_PRECISION}, transformers",
            estimate.weight_bytes[TRANSFORMERS_PRECISION],
            estimate.kv_bytes_at_context,
            estimate.total_bytes(TRANSFORMERS_PRECISION),
        )
    )
    return rows


def _parts(memory: LlamaCppMemory) -> tuple[int, int, int]:
    return memory.weight_bytes, memory.kv_bytes, memory.total_bytes


def show_estimate(result: SourceEstimate, machine: Machine, as_json: bool) -> None:
    """Print what one model needs and whether it fits this machine, engine by engine."""
    estimate, context = result.memory, result.memory.context
    arch, gpu = result.architecture, machine.llamacpp_gpu
    budget = machine.llamacpp.free_bytes
    stored = None
    if result.stored_bytes is not None:
        stored = llamacpp_memory(
            arch, result.stored_bytes, context, gpu=gpu, repacked_bytes=result.stored_repacked_bytes
        )
    if as_json:
        document = {"source": result.source, "kind": result.kind, "context": context}
        document |= _estimate_json(estimate, machine.transformers.free_bytes)
        document |= {"stored_format": result.stored_format, "stored_bytes": result.stored_bytes}
        document |= {"stored_total_bytes": stored.total_bytes if stored else None}
        document["llamacpp"] = {
            "stored": _memory_json(stored, budget) if stored else None,
            "gguf": {
                q: _memory_json(quant_memory(arch, q, context, gpu=gpu), budget)
                for q in GGUF_QUANTS
            },
        }
        document |= {"device": _device_json(machine.llamacpp)}
        document |= {"transformers_device": _device_json(machine.transformers)}
        typer.echo(json.dumps(document, indent=2))
        return
    console = stdout_console()
    console.print(f"{result.source} ({result.kind}, {arch.model_type or 'unknown architecture'})")
    console.print(
        f"Parameters: {_params(estimate)}; KV cache: "
        f"{format_bytes(estimate.kv_bytes_per_1k_tokens)} per 1,000 tokens"
    )
    console.print(_device_line("llama.cpp engine (GGUF)", machine.llamacpp, context))
    if not machine.same_device:
        console.print(_device_line("transformers engine (bf16)", machine.transformers))
    table = Table(header_style="bold")
    for column in ("Serving", "Weights", "KV cache", "Total", "Fits"):
        table.add_column(column, justify="left" if column == "Serving" else "right")
    for label, weights, kv, total in _estimate_rows(result, machine):
        room = machine.transformers if label.endswith("transformers") else machine.llamacpp
        fits = total <= room.free_bytes
        mark = Text("yes", style="green") if fits else Text("no", style="red")
        table.add_row(label, format_bytes(weights), format_bytes(kv), format_bytes(total), mark)
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
        machine = detect_machine()
        if estimate is None:
            show_catalog(machine, context, as_json)
            return
        data_dir = Settings().data_dir
        result = estimate_source(
            estimate,
            context,
            endpoints=hub_endpoints(mirror),
            revision=revision,
            store_lookup=lambda name: lookup(name, data_dir),
        )
        show_estimate(result, machine, as_json)
