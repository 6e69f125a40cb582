"""What the scheduler needs from a model: slots of KV cache, prefill chunks and decode steps.

A runner owns the KV cache and is called from one thread only (the scheduler's). Every
sequence lives in a slot from admission until it finishes; the runner decides how slots map
to batch rows. Runners return logits; the scheduler samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True, slots=True)
class PrefillChunk:
    """Part of a prompt to run through the model: ``token_ids`` at positions ``start``…"""

    slot: int
    start: int  # tokens of this sequence already in the cache
    token_ids: Sequence[int]


@dataclass(frozen=True, slots=True)
class DecodeInput:
    """One new token per sequence, at position ``position`` (= tokens already cached)."""

    slot: int
    token_id: int
    position: int


@dataclass(frozen=True, slots=True)
class KVLayout:
    """How the runner's KV cache is shaped, for planning and metrics."""

    max_slots: int
    max_seq_len: int  # tokens one slot holds (prompt + output)
    bytes_per_token: int
    derivation: str  # one line saying how the numbers were chosen


class ModelRunner(Protocol):
    """A model the scheduler can batch. All calls come from the scheduler thread."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def kv(self) -> KVLayout: ...

    def acquire(self) -> int:
        """Reserve a free slot and return its id (the scheduler checks one is free)."""
        ...

    def release(self, slot: int) -> None:
        """Free a slot. A runner may keep its cache contents for ``reuse_prefix``."""
        ...

    def reuse_prefix(self, slot: int, prompt: Sequence[int]) -> int:
        """Before a slot's first prefill: cached tokens of ``prompt`` now in it (0: none)."""
        ...

    def prefill(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        """Run prompt chunks; return logits at each chunk's last token. # [len(chunks), V]"""
        ...

    def decode(self, inputs: Sequence[DecodeInput]) -> torch.Tensor:
        """Run one token per sequence; return next-token logits. # [len(inputs), V]"""
        ...
