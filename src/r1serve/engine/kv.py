"""Planning the KV cache: how many sequences, how long each, from memory and the model config.

Bytes per cached token = layers x KV heads x head dim x 2 (K and V) x dtype bytes. The budget
is a share of the memory left after the weights are loaded (free GPU memory on CUDA, available
RAM on CPU) unless the user fixes slots or tokens. Each slot holds one sequence of up to
``max_seq_len`` tokens (prompt + output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import psutil

from r1serve.errors import ConfigError

GIB = 1024**3
MIN_SLOTS = 4
MAX_SLOTS_CPU = 32  # beyond this a 2-16 core CPU is compute-bound; more rows only add latency
MAX_SLOTS_GPU = 256
CPU_SHARE = 0.30  # of available RAM
GPU_SHARE = 0.85  # of free GPU memory


class Device(Protocol):
    """A ``torch.device``, or ``CPU``: torch is imported only where a GPU is asked about."""

    @property
    def type(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _Host:
    type: str = "cpu"


CPU: Device = _Host()


class DType(Protocol):
    @property
    def itemsize(self) -> int: ...


@dataclass(frozen=True, slots=True)
class KVPlan:
    max_slots: int
    max_seq_len: int
    bytes_per_token: int
    derivation: str

    @property
    def total_tokens(self) -> int:
        return self.max_slots * self.max_seq_len

    @property
    def total_bytes(self) -> int:
        return self.total_tokens * self.bytes_per_token


def bytes_per_token(config: Any, dtype: DType) -> tuple[int, str]:
    """KV bytes per token and the formula with its numbers."""
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    size = dtype.itemsize
    total = layers * kv_heads * head_dim * 2 * size
    formula = f"{layers} layers x {kv_heads} KV heads x {head_dim} dims x 2 x {size} bytes"
    return total, formula


def available_memory(device: Device) -> tuple[int, str]:
    """Memory the cache may draw from, and where that number came from."""
    if device.type == "cuda":
        import torch  # only on a GPU: the CPU paths of llama.cpp and upstream never load it

        free, total = torch.cuda.mem_get_info(device)  # type: ignore[arg-type]
        return int(free * GPU_SHARE), (
            f"{GPU_SHARE:.0%} of {free / GIB:.1f} GiB free on {device} ({total / GIB:.1f} GiB)"
        )
    available = psutil.virtual_memory().available
    return int(available * CPU_SHARE), f"{CPU_SHARE:.0%} of {available / GIB:.1f} GiB available RAM"


def _fmt_bytes(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024**2:.0f} MiB"


def plan_kv(
    *,
    per_token: int,
    formula: str,
    context_length: int,
    device: Device,
    max_slots: int | None = None,
    kv_cache_tokens: int | None = None,
    budget: tuple[int, str] | None = None,
) -> KVPlan:
    """Choose slots and per-slot length; say how. Explicit settings win over the budget."""
    if kv_cache_tokens is not None:
        budget_bytes, source = kv_cache_tokens * per_token, f"--kv-cache-tokens {kv_cache_tokens}"
    else:
        budget_bytes, source = budget or available_memory(device)
    seq_len = context_length
    cap = MAX_SLOTS_GPU if device.type == "cuda" else MAX_SLOTS_CPU
    fit = budget_bytes // (seq_len * per_token)
    if max_slots is not None:
        slots = max_slots
        if kv_cache_tokens is not None or fit < slots:
            seq_len = min(seq_len, budget_bytes // (slots * per_token))
    elif fit >= MIN_SLOTS:
        slots = min(cap, fit)
    else:  # the full context does not fit often enough: shorten slots instead
        slots = MIN_SLOTS if kv_cache_tokens is None else max(1, min(MIN_SLOTS, int(fit) or 1))
        seq_len = min(seq_len, budget_bytes // (slots * per_token))
    if seq_len < 16:
        raise ConfigError(
            f"KV cache budget too small: {_fmt_bytes(budget_bytes)} ({source}) holds "
            f"{budget_bytes // per_token} tokens at {per_token} bytes each; "
            "free memory, or lower --max-num-seqs"
        )
    if seq_len > 256:
        seq_len -= seq_len % 256  # round down to a tidy size
    total = slots * seq_len * per_token
    derivation = (
        f"KV cache: {slots} sequences x {seq_len} tokens = {slots * seq_len} tokens x "
        f"{per_token / 1024:.1f} KiB/token ({formula}) = {_fmt_bytes(total)}; "
        f"budget {_fmt_bytes(budget_bytes)} from {source}; context {context_length}"
    )
    return KVPlan(slots, seq_len, per_token, derivation)
