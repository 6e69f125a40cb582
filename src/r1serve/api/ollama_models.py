"""What Ollama's model endpoints say about a model (``/api/tags``, ``/api/show``, ``/api/ps``).

Facts come from the model's own files (GGUF header, ``config.json``), read once and cached;
a model r1serve knows nothing about (the fake engine) still gets well-formed answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from r1serve.api.ollama_mapping import digest_of, tagged, timestamp
from r1serve.catalog.store import StoredModel
from r1serve.engine.protocol import Engine
from r1serve.engine.source import ModelSource
from r1serve.errors import R1ServeError

FAR_FUTURE = 4_102_444_800.0  # 2100-01-01: a served model stays loaded until the server stops


@dataclass(frozen=True, slots=True)
class ModelFacts:
    format: str = ""  # "gguf" or "safetensors"
    family: str = ""  # architecture: "qwen2", "llama"…
    quantization: str = ""  # "Q4_K_M", "bfloat16"…
    size: int = 0  # bytes on disk
    parameters: int = 0


@lru_cache(maxsize=32)
def facts_of(source: ModelSource | None) -> ModelFacts:
    """Format, architecture, weight type and size of the model at ``source``."""
    if source is None:
        return ModelFacts()
    try:
        if source.kind == "gguf":
            return _gguf_facts(source.file)
        return _hf_facts(source.path)
    except (OSError, ValueError, R1ServeError):
        return ModelFacts()


def _gguf_facts(path: Path) -> ModelFacts:
    from r1serve.catalog.gguf_header import read_gguf_header

    header = read_gguf_header(path)
    family = str(header.metadata.get("general.architecture", ""))
    params = 0
    for tensor in header.tensors:
        count = 1
        for dim in tensor.shape:
            count *= dim
        params += count
    return ModelFacts("gguf", family, header.file_type_label, path.stat().st_size, params)


def _hf_facts(folder: Path) -> ModelFacts:
    config = json.loads((folder / "config.json").read_text("utf-8"))
    if not isinstance(config, dict):
        return ModelFacts("safetensors")
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    return ModelFacts("safetensors", str(config.get("model_type", "")), dtype, size)


def parameter_size(count: int) -> str:
    """Ollama's ``parameter_size``: ``135M``, ``1.5B``."""
    if count <= 0:
        return ""
    if count >= 1e9:
        return f"{count / 1e9:.1f}B".replace(".0B", "B")
    return f"{round(count / 1e6)}M"


def details(facts: ModelFacts) -> dict[str, Any]:
    family = facts.family
    return {
        "parent_model": "",
        "format": facts.format,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size(facts.parameters),
        "quantization_level": facts.quantization,
    }


def served_entry(engine: Engine, facts: ModelFacts, started: float) -> dict[str, Any]:
    """The served model as one ``/api/tags`` entry."""
    name = tagged(engine.model_name)
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(started),
        "size": facts.size,
        "digest": digest_of(name, facts.size),
        "details": details(facts),
    }


def stored_entry(model: StoredModel) -> dict[str, Any]:
    """A model in r1serve's store as one ``/api/tags`` entry."""
    name = tagged(model.name)
    try:
        modified = model.path.stat().st_mtime
    except OSError:
        modified = 0.0
    facts = ModelFacts(format=model.format, quantization=model.dtype, size=model.size_bytes)
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(modified),
        "size": model.size_bytes,
        "digest": digest_of(name, model.size_bytes),
        "details": details(facts),
    }


def running_entry(engine: Engine, facts: ModelFacts, started: float) -> dict[str, Any]:
    """The served model as one ``/api/ps`` entry: it stays in memory while the server runs."""
    entry = served_entry(engine, facts, started)
    return {
        **entry,
        "expires_at": timestamp(FAR_FUTURE),
        "size_vram": 0,
        "context_length": engine.context_length,
    }


def reasons(engine: Engine) -> bool:
    """Whether the model thinks first: its template opens a ``<think>`` block, or strips the
    reasoning of earlier replies (R1's template does that, and leaves the opening to the model)."""
    if "</think>" in str(getattr(engine, "chat_template", "")):
        return True
    try:
        prompt = engine.render_chat([{"role": "user", "content": "hi"}])
    except R1ServeError:
        return False
    return prompt.opens_reasoning or "<think>" in prompt.text


def show(engine: Engine, facts: ModelFacts, started: float) -> dict[str, Any]:
    """``/api/show`` for the served model."""
    family = facts.family or "unknown"
    defaults = dict(engine.default_sampling)
    parameters = "\n".join(f"{key:<15} {value}" for key, value in sorted(defaults.items()))
    template = str(getattr(engine, "chat_template", "") or "")
    model_info: dict[str, Any] = {
        "general.architecture": family,
        "general.name": engine.model_name,
        "general.parameter_count": facts.parameters or None,
        f"{family}.context_length": engine.context_length,
        "tokenizer.vocab_size": engine.tokenizer.vocab_size,
        "r1serve.engine": engine.kind,
    }
    capabilities = ["completion", *(["thinking"] if reasons(engine) else [])]
    return {
        "license": "",
        "modelfile": f"# served by r1serve\nFROM {engine.model_name}\n",
        "parameters": parameters,
        "template": template,
        "details": details(facts),
        "model_info": {k: v for k, v in model_info.items() if v is not None},
        "capabilities": capabilities,
        "modified_at": timestamp(started),
    }
