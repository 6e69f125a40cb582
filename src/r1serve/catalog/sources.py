"""Size any model for `r1serve models --estimate`: a local HF folder, a GGUF file, or a hub repo."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1serve.catalog.estimate import (
    Architecture,
    LatentAttention,
    MemoryEstimate,
    ParameterCount,
    architecture_from_hf_config,
    estimate_memory,
    kv_cache_bytes_per_token,
    memory_estimate,
)
from r1serve.catalog.gguf_header import GgufHeader, read_gguf_header
from r1serve.catalog.hub import fetch_small_file
from r1serve.catalog.quants import REPACKED_TYPES
from r1serve.errors import ModelNotFoundError, UnsupportedModelError

StoreLookup = Callable[[str], Path | None]


@dataclass(frozen=True, slots=True)
class SourceEstimate:
    """What `--estimate` found: where the model came from and what it needs."""

    source: str  # what the user typed
    kind: str  # "hf-dir", "gguf" or "hub"
    architecture: Architecture
    memory: MemoryEstimate
    stored_format: str | None = None  # GGUF weight type, e.g. "Q4_K_M"
    stored_bytes: int | None = None  # weights as the GGUF stores them
    stored_repacked_bytes: int = 0  # of which llama.cpp's CPU backend repacks (a second copy)


def _gguf_int(header: GgufHeader, key: str, default: int | None = None) -> int:
    value = header.metadata.get(key)
    if isinstance(value, tuple):  # per-layer values (e.g. head_count_kv): size for the largest
        value = max((int(v) for v in value), default=None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if default is None:
        raise UnsupportedModelError(f"GGUF metadata has no {key}")
    return default


def architecture_from_gguf(header: GgufHeader) -> Architecture:
    """The architecture in a GGUF's metadata (enough for its KV cache)."""
    arch = header.architecture
    hidden = _gguf_int(header, f"{arch}.embedding_length")
    heads = _gguf_int(header, f"{arch}.attention.head_count")
    if heads == 0:
        raise UnsupportedModelError("GGUF metadata: attention.head_count is 0")
    vocab = header.array_lengths.get("tokenizer.ggml.tokens") or _gguf_int(
        header, f"{arch}.vocab_size"
    )
    latent = None
    kv_rank = header.metadata.get(f"{arch}.attention.kv_lora_rank")
    if isinstance(kv_rank, int) and kv_rank > 0:
        rope = _gguf_int(header, f"{arch}.rope.dimension_count")
        key_length = _gguf_int(header, f"{arch}.attention.key_length", rope)
        latent = LatentAttention(
            q_lora_rank=_gguf_int(header, f"{arch}.attention.q_lora_rank", 0) or None,
            kv_lora_rank=kv_rank,
            qk_nope_head_dim=key_length - rope,
            qk_rope_head_dim=rope,
            v_head_dim=_gguf_int(header, f"{arch}.attention.value_length", key_length - rope),
        )
    return Architecture(
        model_type=arch,
        num_layers=_gguf_int(header, f"{arch}.block_count"),
        hidden_size=hidden,
        intermediate_size=_gguf_int(header, f"{arch}.feed_forward_length", 0),
        num_attention_heads=heads,
        num_kv_heads=_gguf_int(header, f"{arch}.attention.head_count_kv", heads),
        head_dim=_gguf_int(header, f"{arch}.attention.key_length", hidden // heads),
        vocab_size=vocab,
        tie_word_embeddings=not any(t.name == "output.weight" for t in header.tensors),
        max_context=_gguf_int(header, f"{arch}.context_length", 0) or None,
        latent_attention=latent,
    )


def _gguf_parameters(header: GgufHeader) -> ParameterCount:
    total = sum(t.n_elements for t in header.tensors)
    arch = header.architecture
    experts = _gguf_int(header, f"{arch}.expert_count", 0)
    used = _gguf_int(header, f"{arch}.expert_used_count", experts)
    # Routed experts live in stacked "*_exps" tensors; a token reads used/experts of them.
    stacked = sum(t.n_elements for t in header.tensors if "_exps." in t.name)
    idle = stacked * (experts - used) // experts if experts else 0
    return ParameterCount(total=total, active=total - idle)


def estimate_gguf(path: Path, context: int, source: str | None = None) -> SourceEstimate:
    """Size a GGUF file from its header: exact weights, KV cache from its metadata."""
    header = read_gguf_header(path)
    architecture = architecture_from_gguf(header)
    kv_per_token = kv_cache_bytes_per_token(architecture)
    return SourceEstimate(
        source=source or str(path),
        kind="gguf",
        architecture=architecture,
        memory=memory_estimate(_gguf_parameters(header), kv_per_token, context),
        stored_format=header.file_type_label,
        stored_bytes=sum(t.n_bytes for t in header.tensors),
        stored_repacked_bytes=sum(
            t.n_bytes
            for t in header.tensors
            if t.quant_type.name in REPACKED_TYPES and t.name != "token_embd.weight"
        ),
    )


def _parse_config(raw: bytes | str, where: str) -> Mapping[str, Any]:
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{where} is not valid JSON") from exc
    if not isinstance(config, dict):
        raise UnsupportedModelError(f"{where} is not a JSON object")
    return config


def estimate_hf_dir(path: Path, context: int, source: str | None = None) -> SourceEstimate:
    """Size a local Hugging Face folder from its ``config.json``."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UnsupportedModelError(f"{path} has no config.json")
    config = _parse_config(config_path.read_bytes(), str(config_path))
    architecture = architecture_from_hf_config(config)
    return SourceEstimate(
        source or str(path), "hf-dir", architecture, estimate_memory(architecture, context)
    )


def estimate_hub_repo(
    repo_id: str,
    context: int,
    *,
    endpoints: Sequence[str],
    revision: str = "main",
    token: str | None = None,
) -> SourceEstimate:
    """Size a hub repo from its ``config.json`` (fetched from the first endpoint that has it)."""
    raw = fetch_small_file(repo_id, "config.json", revision, endpoints, token)
    architecture = architecture_from_hf_config(_parse_config(raw, f"config.json of {repo_id}"))
    return SourceEstimate(repo_id, "hub", architecture, estimate_memory(architecture, context))


def estimate_source(
    source: str,
    context: int,
    *,
    endpoints: Sequence[str],
    revision: str = "main",
    token: str | None = None,
    store_lookup: StoreLookup | None = None,
) -> SourceEstimate:
    """Size ``source``: a local folder or GGUF, a name from `r1serve ls`, or a hub repo id."""
    path = Path(source).expanduser()
    if not path.exists() and store_lookup is not None:
        stored = store_lookup(source)
        if stored is not None:
            path = stored
    if path.is_dir():
        return estimate_hf_dir(path, context, source)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UnsupportedModelError(f"{source}: expected a folder or a .gguf file")
        return estimate_gguf(path, context, source)
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{source}: no such file or folder, and not a hub repo id")
    return estimate_hub_repo(source, context, endpoints=endpoints, revision=revision, token=token)
