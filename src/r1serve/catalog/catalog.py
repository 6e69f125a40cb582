"""The models `r1serve models` knows: the DeepSeek-R1 family and small models for CPUs.

Their architectures come from ``models.json`` (values copied from each repo's ``config.json``,
since nothing may be fetched at run time); every size shown is computed from them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from r1serve.catalog.estimate import (
    PRECISIONS,
    Architecture,
    MemoryEstimate,
    Precision,
    architecture_from_hf_config,
    count_parameters,
    estimate_memory,
)
from r1serve.catalog.quants import (
    GGUF_QUANTS,
    SHOWN_QUANTS,
    LlamaCppMemory,
    quant_memory,
)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A model we can recommend, with its real architecture."""

    repo_id: str
    family: str
    note: str
    architecture: Architecture
    gguf_repo: str  # a GGUF conversion whose file names carry the quantization

    @property
    def short_name(self) -> str:
        """The name `r1serve pull NAME:QUANT` accepts: the repo's name, lower case."""
        return self.repo_id.rsplit("/", 1)[-1].lower()


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The largest model and highest precision that fit, and what they need in total."""

    repo_id: str
    precision: Precision
    total_bytes: int
    budget_bytes: int


@cache
def load_catalog() -> tuple[CatalogEntry, ...]:
    """Every catalog model, largest first."""
    text = resources.files("r1serve.catalog").joinpath("models.json").read_text("utf-8")
    entries = tuple(
        CatalogEntry(
            repo_id=item["repo_id"],
            family=item["family"],
            note=item["note"],
            architecture=architecture_from_hf_config(item["config"]),
            gguf_repo=item["gguf_repo"],
        )
        for item in json.loads(text)["models"]
    )
    return tuple(sorted(entries, key=lambda e: -count_parameters(e.architecture).total))


def find_entry(repo_id: str) -> CatalogEntry | None:
    """The catalog entry for ``repo_id`` (case-insensitive), if there is one."""
    wanted = repo_id.lower()
    return next((e for e in load_catalog() if e.repo_id.lower() == wanted), None)


def find_short_name(name: str) -> CatalogEntry | None:
    """The entry whose short name (``deepseek-r1-distill-qwen-7b``) is ``name``, any case."""
    wanted = name.lower()
    return next((e for e in load_catalog() if e.short_name == wanted), None)


@dataclass(frozen=True, slots=True)
class GgufRecommendation:
    """The largest model and best GGUF quantization the llama.cpp engine fits in a budget."""

    entry: CatalogEntry
    quant: str
    memory: LlamaCppMemory
    budget_bytes: int

    @property
    def pull_name(self) -> str:
        """What to type after `r1serve pull` (and `serve --model`) for it."""
        return f"{self.entry.short_name}:{self.quant.lower()}"


def fitting_quants(
    entry: CatalogEntry, budget_bytes: int, context: int, *, gpu: bool = False
) -> list[str]:
    """GGUF quantizations of ``entry`` whose llama.cpp memory at ``context`` fits the budget."""
    return [
        q
        for q in GGUF_QUANTS
        if quant_memory(entry.architecture, q, context, gpu=gpu).total_bytes <= budget_bytes
    ]


def recommend_gguf(
    entries: Sequence[CatalogEntry],
    budget_bytes: int,
    context: int,
    *,
    gpu: bool = False,
    quants: Sequence[str] = SHOWN_QUANTS,
) -> GgufRecommendation | None:
    """The largest model that fits on the llama.cpp engine, at the best of ``quants`` that fits."""
    best: tuple[int, GgufRecommendation] | None = None
    for entry in entries:
        fitting = [q for q in fitting_quants(entry, budget_bytes, context, gpu=gpu) if q in quants]
        if not fitting:
            continue
        size = count_parameters(entry.architecture).total
        if best is None or size > best[0]:
            quant = fitting[-1]  # GGUF_QUANTS runs from fewest to most bits
            memory = quant_memory(entry.architecture, quant, context, gpu=gpu)
            best = (size, GgufRecommendation(entry, quant, memory, budget_bytes))
    return best[1] if best is not None else None


def fitting_precisions(estimate: MemoryEstimate, budget_bytes: int) -> list[Precision]:
    """Precisions whose weights, KV cache at the context and overhead fit in ``budget_bytes``."""
    return [p for p in PRECISIONS if estimate.total_bytes(p) <= budget_bytes]


def recommend(
    entries: Sequence[CatalogEntry],
    budget_bytes: int,
    context: int,
    precisions: Sequence[Precision] = PRECISIONS,
) -> Recommendation | None:
    """The largest model that fits at ``context`` tokens, at the highest precision that fits.

    ``precisions`` limits the choice, e.g. to ``("bf16",)``: what r1serve itself computes in.
    """
    best: tuple[int, CatalogEntry, Precision, int] | None = None
    for entry in entries:
        estimate = estimate_memory(entry.architecture, context)
        fitting = [p for p in fitting_precisions(estimate, budget_bytes) if p in precisions]
        if not fitting:
            continue
        size = estimate.parameters.total
        if best is None or size > best[0]:
            best = (size, entry, fitting[0], estimate.total_bytes(fitting[0]))
    if best is None:
        return None
    _, entry, precision, total = best
    return Recommendation(entry.repo_id, precision, total, budget_bytes)
