"""Token masks of guided sequences applied to a batch of logits, between forward and sampling."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from r1serve.engine.grammar import Guide

log = logging.getLogger("r1serve.scheduler")

_BITS = torch.arange(32, dtype=torch.int32)  # [32]


def mask_logits(
    logits: torch.Tensor, guides: Sequence[Guide | None], eos_token_ids: frozenset[int]
) -> torch.Tensor:
    """Set the logits of tokens each active guide forbids to -inf: [B, V] -> [B, V].

    Rows without an active guide are untouched; the input is returned when no row is guided.
    A matcher that has failed (it should not, as it only sees allowed tokens) allows only EOS,
    so the sequence ends instead of sampling from nothing.
    """
    rows = [row for row, guide in enumerate(guides) if guide is not None and guide.active]
    if not rows:
        return logits
    batch, vocab = logits.shape
    words = (vocab + 31) // 32
    bitmask = torch.zeros(len(rows), words, dtype=torch.int32)  # [R, W], one bit per token
    for i, row in enumerate(rows):
        guide = guides[row]
        assert guide is not None
        target = bitmask[i]
        guide.matcher.unsafe_compute_mask_ptr(target.data_ptr(), words * 4)
        if guide.matcher.is_error():
            log.warning("guided decoding failed: %s", guide.matcher.get_error())
            target.zero_()
            for token in eos_token_ids:
                bit = 1 << (token % 32)
                target[token // 32] |= bit - (1 << 32) if bit >= 1 << 31 else bit
    allowed = ((bitmask.unsqueeze(-1) >> _BITS) & 1).bool().reshape(len(rows), -1)[:, :vocab]
    banned = torch.zeros(batch, vocab, dtype=torch.bool)  # [B, V]
    banned[torch.tensor(rows)] = ~allowed
    return logits.masked_fill(banned.to(logits.device), float("-inf"))
