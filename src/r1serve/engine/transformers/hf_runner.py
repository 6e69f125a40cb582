"""The fallback runner for architectures the native decoder does not know.

It calls the transformers model's own forward with one ``DynamicCache`` per slot. Sequences
still join and leave between steps, but each runs its own forward pass: correct for any causal
LM, without the batching speed-up of ``NativeRunner``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from r1serve.engine.transformers.runner import DecodeInput, KVLayout, PrefillChunk


class HFRunner:
    """ModelRunner over ``model(input_ids, cache=...)``, one sequence per forward."""

    def __init__(self, model: nn.Module, *, max_slots: int, max_seq_len: int, derivation: str):
        self.model = model
        config: Any = model.config
        self.config = config
        self.device = next(model.parameters()).device
        self._kv = KVLayout(max_slots, max_seq_len, 0, derivation + " (generic runner)")
        self._caches: dict[int, DynamicCache] = {}
        self._free = list(range(max_slots - 1, -1, -1))
        out: Any = model.get_output_embeddings()  # type: ignore[operator]
        self._vocab = int(out.weight.shape[0]) if out is not None else int(config.vocab_size)

    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def kv(self) -> KVLayout:
        return self._kv

    def acquire(self) -> int:
        slot = self._free.pop()
        self._caches[slot] = DynamicCache(config=self.config)
        return slot

    def reuse_prefix(self, slot: int, prompt: Sequence[int]) -> int:
        return 0  # no prefix cache

    def release(self, slot: int) -> None:
        del self._caches[slot]
        self._free.append(slot)

    def _run(self, slot: int, token_ids: Sequence[int], start: int) -> torch.Tensor:
        ids = torch.tensor([list(token_ids)], device=self.device)  # [1, T]
        positions = torch.arange(start, start + len(token_ids), device=self.device)[None]
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            past_key_values=self._caches[slot],
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[0, -1].float()  # [V]

    def prefill(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        return torch.stack([self._run(c.slot, c.token_ids, c.start) for c in chunks])

    def decode(self, inputs: Sequence[DecodeInput]) -> torch.Tensor:
        return torch.stack([self._run(i.slot, [i.token_id], i.position) for i in inputs])
