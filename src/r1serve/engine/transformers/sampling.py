"""Batched next-token selection for B sequences, each with its own ``SamplingParams``.

Order of operations for one row: repetition penalty (HF: over prompt and output tokens,
positive logits divided, negative multiplied), presence and frequency penalties (OpenAI: over
output tokens, ``logit -= presence * (count > 0) + frequency * count``), ``logit_bias`` and
banned tokens, then either greedy argmax (temperature below ``GREEDY_BELOW``, 1e-5, 0 included;
ties go to the lowest id) or temperature, top-k, top-p (over the top-k renormalized), min-p
(relative to the most likely token), and a draw. ``(logit - max) / T`` is at most 0 for every
T drawn with (>= 1e-5), so it never overflows: the best token's weight is exactly 1.

Reproducibility: each row draws exactly one uniform number per step from its own CPU
``torch.Generator`` and turns it into a token by inverse-CDF sampling over its own row. So a
seed gives the same tokens whatever else is in the batch, at any position in it, and on any
device (up to float rounding of the row's own sums).

Cost: filters look only at the top ``_CANDIDATES`` tokens of each row (``topk`` instead of a
full sort, which is ~25x slower on CPU) and fall back to a full sort for a row whose filters
reach past them; inverse CDF sums the vocabulary in blocks, so no row needs V random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import torch

from r1serve.engine.protocol import LOGPROB_FLOOR, SamplingParams, TokenLogprob
from r1serve.errors import RequestError

# Enough for top-p 0.95 on the peaked distributions of chat models; rows needing more are
# redone with a full sort.
_CANDIDATES = 512
_BLOCK = 1024  # inverse-CDF block size: a block sum, then a cumsum inside one block


class SequenceSampler:
    """Per-sequence sampling state: parameters, random generator and penalty bookkeeping.

    ``eos_token_ids`` are banned when ``params.ignore_eos`` is set. Penalty state lives on the
    logits' device as dense [V] tensors; ``observe`` only queues the token (O(1)) and the next
    ``sample`` adds the queued tokens, so per-step work never grows with the output length.
    """

    def __init__(
        self,
        params: SamplingParams,
        prompt_token_ids: Sequence[int],
        vocab_size: int,
        *,
        eos_token_ids: Collection[int] = (),
    ) -> None:
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.params = params
        self.vocab_size = vocab_size
        # On the CPU whatever the model's device: the seed then means the same on every device.
        self._generator = torch.Generator()
        if params.seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(params.seed % 2**64)
        self._uses_repetition = params.repetition_penalty != 1.0
        self._uses_counts = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        self._prompt_ids = _checked_prompt(prompt_token_ids, vocab_size, self._uses_repetition)
        self._bias = _checked_bias(params, vocab_size, eos_token_ids)
        self._pending: list[int] = []  # observed tokens not yet added to the tensors below
        self._seen: torch.Tensor | None = None  # [V] bool: prompt and output tokens
        self._counts: torch.Tensor | None = None  # [V] float32: output token counts
        self._penalty: torch.Tensor | None = None  # [V] float32: presence/frequency penalty
        self._bias_tensors: tuple[torch.Tensor, torch.Tensor] | None = None  # ids [n], values [n]

    @property
    def adjusts_logits(self) -> bool:
        """True when penalties, bias or banned tokens change this row's logits."""
        return self._uses_repetition or self._uses_counts or bool(self._bias)

    @property
    def is_plain_greedy(self) -> bool:
        """True when this row is a bare argmax of the model's logits."""
        return self.params.greedy and not self.adjusts_logits

    def observe(self, token_id: int) -> None:
        """Record a generated token for the penalties."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} outside the vocabulary of {self.vocab_size}")
        if self._uses_repetition or self._uses_counts:
            self._pending.append(token_id)

    def draw_uniform(self) -> float:
        """The next number in [0, 1) from this sequence's generator."""
        return float(torch.rand((), generator=self._generator, dtype=torch.float64))

    def _seen_mask(self, device: torch.device) -> torch.Tensor:
        """[V] bool: tokens of the prompt and the output so far."""
        self._sync(device)
        assert self._seen is not None
        return self._seen

    def _count_penalty(self, device: torch.device) -> torch.Tensor:
        """[V] float32: presence * (count > 0) + frequency * count over the output."""
        self._sync(device)
        assert self._penalty is not None
        return self._penalty

    def _bias_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [n] and the values [n] added to their logits (banned tokens: -inf)."""
        if self._bias_tensors is None or self._bias_tensors[0].device != device:
            ids = torch.tensor(list(self._bias), dtype=torch.long, device=device)
            values = torch.tensor(list(self._bias.values()), dtype=torch.float32, device=device)
            self._bias_tensors = (ids, values)
        return self._bias_tensors

    def _sync(self, device: torch.device) -> None:
        """Create the penalty tensors on ``device`` and add the queued tokens to them."""
        if self._uses_repetition and self._seen is None:
            self._seen = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
            self._seen[torch.tensor(self._prompt_ids, dtype=torch.long, device=device)] = True
        if self._uses_counts and self._counts is None:
            self._counts = torch.zeros(self.vocab_size, dtype=torch.float32, device=device)
            self._penalty = torch.zeros(self.vocab_size, dtype=torch.float32, device=device)
        for name in ("_seen", "_counts", "_penalty"):
            tensor = getattr(self, name)
            if tensor is not None and tensor.device != device:
                setattr(self, name, tensor.to(device))
        if not self._pending:
            return
        new = torch.tensor(self._pending, dtype=torch.long, device=device)  # [n]
        self._pending.clear()
        if self._seen is not None:
            self._seen[new] = True
        if self._counts is not None and self._penalty is not None:
            self._counts.index_put_((new,), torch.ones_like(new, dtype=torch.float32), True)
            counts = self._counts[new]  # [n]; only the touched entries change
            params = self.params
            self._penalty[new] = params.presence_penalty + params.frequency_penalty * counts


def sample(logits: torch.Tensor, samplers: Sequence[SequenceSampler]) -> torch.Tensor:
    """Pick the next token of each row: [B, V] logits -> [B] int64 token ids."""
    _check_batch(logits, samplers)
    if all(sampler.is_plain_greedy for sampler in samplers):
        return logits.argmax(dim=-1)  # [B]; first maximum, so ties go to the lowest id
    adjusted = adjust_logits(logits.float(), samplers)  # [B, V]
    device = adjusted.device
    tokens = torch.empty(len(samplers), dtype=torch.long, device=device)  # [B]
    greedy = [row for row, sampler in enumerate(samplers) if sampler.params.greedy]
    drawn = [row for row, sampler in enumerate(samplers) if not sampler.params.greedy]
    if greedy:
        rows = torch.tensor(greedy, device=device)  # [G]
        tokens[rows] = adjusted[rows].argmax(dim=-1)
    if len(drawn) == len(samplers):
        # _draw_rows works in place: give it a copy unless adjust_logits already made one.
        owned = adjusted if adjusted is not logits else adjusted.clone()
        return _draw_rows(owned, samplers)
    if drawn:
        rows = torch.tensor(drawn, device=device)  # [R]
        tokens[rows] = _draw_rows(adjusted[rows], [samplers[row] for row in drawn])
    return tokens


def adjust_logits(logits: torch.Tensor, samplers: Sequence[SequenceSampler]) -> torch.Tensor:
    """Apply penalties, logit_bias and bans; returns a new tensor (the input if no row adjusts)."""
    _check_batch(logits, samplers)
    if not any(sampler.adjusts_logits for sampler in samplers):
        return logits
    logits = logits.clone()  # [B, V]
    device = logits.device

    repeat = [row for row, s in enumerate(samplers) if s._uses_repetition]
    if repeat:
        seen = torch.stack([samplers[row]._seen_mask(device) for row in repeat])  # [P, V]
        penalty = _column([samplers[row].params.repetition_penalty for row in repeat], device)
        values = _rows(logits, repeat)  # [P, V]
        penalized = torch.where(values > 0, values / penalty, values * penalty)  # [P, V]
        _put_rows(logits, repeat, torch.where(seen, penalized, values))

    counted = [row for row, s in enumerate(samplers) if s._uses_counts]
    if counted:
        values = _rows(logits, counted)  # [C, V]
        values.sub_(torch.stack([samplers[row]._count_penalty(device) for row in counted]))
        _put_rows(logits, counted, values)

    biased = [row for row, s in enumerate(samplers) if s._bias]
    if biased:
        pairs = [samplers[row]._bias_on(device) for row in biased]
        row_ids = torch.cat(
            [torch.full_like(ids, row) for row, (ids, _) in zip(biased, pairs, strict=True)]
        )  # [n]
        token_ids = torch.cat([ids for ids, _ in pairs])  # [n]
        values = torch.cat([values for _, values in pairs])  # [n]
        logits.index_put_((row_ids, token_ids), values, accumulate=True)
    return logits


def token_logprobs(
    adjusted: torch.Tensor, tokens: Sequence[int], top: Sequence[int]
) -> list[TokenLogprob]:
    """Log probabilities of the chosen ``tokens`` [R] and the ``top[r]`` best of each row.

    ``adjusted`` [R, V] are the logits after penalties and logit_bias (``adjust_logits``),
    before temperature and filters: the model's distribution as the sampler adjusted it.
    """
    logp = torch.log_softmax(adjusted.float(), dim=-1)  # [R, V]
    ids = torch.tensor(list(tokens), dtype=torch.long, device=logp.device)  # [R]
    chosen = logp.gather(1, ids[:, None]).squeeze(1).tolist()  # [R]
    width = max(top, default=0)
    best_values: list[list[float]] = [[] for _ in tokens]
    best_ids: list[list[int]] = [[] for _ in tokens]
    if width:
        values, indices = logp.topk(min(width, logp.shape[-1]), dim=-1)  # [R, W], descending
        best_values, best_ids = values.tolist(), indices.tolist()
    out = []
    for row, token in enumerate(tokens):
        alternatives = tuple(
            (tid, max(value, LOGPROB_FLOOR))
            for tid, value in zip(
                best_ids[row][: top[row]], best_values[row][: top[row]], strict=True
            )
        )
        out.append(TokenLogprob(token, max(chosen[row], LOGPROB_FLOOR), alternatives))
    return out


def _rows(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """The given rows of [B, V]: the tensor itself when that is all of them, else a copy."""
    if len(rows) == logits.shape[0]:
        return logits
    return logits[torch.tensor(rows, device=logits.device)]


def _put_rows(logits: torch.Tensor, rows: list[int], values: torch.Tensor) -> None:
    """Write [len(rows), V] values back into the given rows of [B, V] logits."""
    if values is logits:
        return
    if len(rows) == logits.shape[0]:
        logits.copy_(values)
    else:
        logits[torch.tensor(rows, device=logits.device)] = values


def _draw_rows(logits: torch.Tensor, samplers: Sequence[SequenceSampler]) -> torch.Tensor:
    """Sample one token per row of [R, V] adjusted logits (overwritten) -> [R]."""
    device = logits.device
    params = [sampler.params for sampler in samplers]
    uniform = torch.tensor(
        [sampler.draw_uniform() for sampler in samplers], dtype=torch.float64, device=device
    )  # [R]
    # In place (each fresh [R, V] tensor costs a page-faulting allocation on the CPU):
    # weights = exp((logit - max) / T), unnormalized probabilities with the largest exactly 1.
    temperature = _column([p.temperature for p in params], device)  # [R, 1]
    weights = logits.sub_(logits.amax(dim=-1, keepdim=True)).div_(temperature).exp_()  # [R, V]
    filtered = [i for i, p in enumerate(params) if p.top_k > 0 or p.top_p < 1 or p.min_p > 0]
    if not filtered:
        return _inverse_cdf(weights, uniform)
    tokens = torch.empty(len(samplers), dtype=torch.long, device=device)  # [R]
    plain = sorted(set(range(len(params))) - set(filtered))
    if plain:
        rows = torch.tensor(plain, device=device)
        tokens[rows] = _inverse_cdf(weights[rows], uniform[rows])
    rows = torch.tensor(filtered, device=device)  # [F]
    tokens[rows] = _draw_filtered(
        _rows(weights, filtered), [params[i] for i in filtered], uniform[rows]
    )
    return tokens


def _draw_filtered(
    weights: torch.Tensor, params: Sequence[SamplingParams], uniform: torch.Tensor
) -> torch.Tensor:
    """Sample with top-k / top-p / min-p from [F, V] weights -> [F]."""
    vocab = weights.shape[-1]
    # Top-k alone bounds a row's kept set; the other filters get the candidate default.
    width = min(vocab, max(p.top_k or _CANDIDATES for p in params))
    values, ids = weights.topk(width, dim=-1)  # [F, W], descending; values[:, 0] == 1
    total = weights.sum(dim=-1)  # [F]
    tokens, complete = _draw_candidates(values, ids, total, params, uniform, vocab)
    if not bool(complete.all()):
        # A filter reaches past the candidates (e.g. top-p on a flat distribution): full sort.
        redo = (~complete).nonzero().squeeze(1)  # [M]
        redo_params = [params[i] for i in redo.tolist()]
        values, ids = weights[redo].sort(dim=-1, descending=True, stable=True)  # [M, V]
        tokens[redo], _ = _draw_candidates(
            values, ids, total[redo], redo_params, uniform[redo], vocab
        )
    return tokens


def _draw_candidates(
    values: torch.Tensor,
    ids: torch.Tensor,
    total: torch.Tensor,
    params: Sequence[SamplingParams],
    uniform: torch.Tensor,
    vocab: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter and sample among the W best tokens of each row: sorted weights/ids [N, W].

    ``total`` [N] is each row's weight over the whole vocabulary. Returns the tokens [N] and
    whether each row's kept set surely lies within the candidates.
    """
    device = values.device
    width = values.shape[-1]
    top_k = torch.tensor([min(p.top_k or vocab, vocab) for p in params], device=device)  # [N]
    top_p = _column([p.top_p for p in params], device)  # [N, 1]
    min_p = _column([p.min_p for p in params], device)  # [N, 1]
    keep = torch.arange(width, device=device) < top_k[:, None]  # [N, W]
    kept = values * keep  # [N, W]
    # Top-p renormalizes over the top-k tokens (all among the candidates) or the whole vocab.
    norm = torch.where(top_k < vocab, kept.sum(dim=-1), total)  # [N]
    probs = kept / norm[:, None]  # [N, W]
    mass_before = probs.cumsum(dim=-1) - probs  # [N, W]
    keep &= (mass_before < top_p) | (top_p >= 1)
    keep &= values >= min_p  # values are p / p_max
    complete = (
        (width == vocab)
        | (top_k < vocab)
        | ((top_p[:, 0] < 1) & (probs.sum(dim=-1) >= top_p[:, 0]))
        | ((min_p[:, 0] > 0) & (values[:, -1] < min_p[:, 0]))
    )  # [N]
    position = _inverse_cdf(values * keep, uniform)  # [N]
    return ids.gather(1, position[:, None]).squeeze(1), complete


def _inverse_cdf(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Index drawn with probability proportional to ``weights`` [N, M] by ``uniform`` [N].

    Two levels, so the running sums are float64 over at most M/_BLOCK + _BLOCK numbers: block
    sums pick a block, a cumsum inside it picks the index. Zero weights are never picked.
    """
    n, m = weights.shape
    device = weights.device
    whole = m // _BLOCK
    parts = []
    if whole:
        parts.append(weights[:, : whole * _BLOCK].reshape(n, whole, _BLOCK).sum(dim=-1))
    if m % _BLOCK:
        parts.append(weights[:, whole * _BLOCK :].sum(dim=-1, keepdim=True))
    block_cdf = torch.cat(parts, dim=1).double().cumsum(dim=-1)  # [N, blocks]
    target = (uniform * block_cdf[:, -1])[:, None]  # [N, 1]
    block = torch.searchsorted(block_cdf, target, right=True).clamp_(max=block_cdf.shape[1] - 1)
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp(min=0)), 0.0)  # [N, 1]
    columns = block * _BLOCK + torch.arange(_BLOCK, device=device)  # [N, BLOCK]
    inside = weights.gather(1, columns.clamp(max=m - 1)).double() * (columns < m)  # [N, BLOCK]
    cdf = inside.cumsum(dim=-1) + before  # [N, BLOCK]
    position = torch.searchsorted(cdf, target, right=True)  # [N, 1]
    # Rounding may put the target past the block's last positive weight: take that one.
    positions = torch.arange(_BLOCK, device=device).expand_as(inside)
    last = torch.where(inside > 0, positions, -1).amax(dim=-1, keepdim=True)  # [N, 1]
    position = torch.minimum(position, last).clamp_(min=0)
    return columns.gather(1, position).squeeze(1)


def _column(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """A [N, 1] float32 column, to broadcast per-row parameters over [N, V]."""
    return torch.tensor(values, dtype=torch.float32, device=device)[:, None]


def _check_batch(logits: torch.Tensor, samplers: Sequence[SequenceSampler]) -> None:
    if logits.dim() != 2 or logits.shape[0] != len(samplers):
        raise ValueError(f"logits {tuple(logits.shape)} do not match {len(samplers)} samplers")
    for sampler in samplers:
        if sampler.vocab_size != logits.shape[1]:
            raise ValueError(
                f"logits have {logits.shape[1]} columns, sampler expects {sampler.vocab_size}"
            )


def _checked_prompt(prompt_ids: Sequence[int], vocab_size: int, needed: bool) -> tuple[int, ...]:
    """Prompt ids for the repetition penalty (kept only when it is on)."""
    if not needed:
        return ()
    ids = tuple(prompt_ids)
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        raise RequestError(f"prompt token ids must be in [0, {vocab_size})", param="prompt")
    return ids


def _checked_bias(
    params: SamplingParams, vocab_size: int, eos_token_ids: Collection[int]
) -> dict[int, float]:
    """logit_bias plus -inf for EOS under ignore_eos, validated against the vocabulary."""
    bias: dict[int, float] = {}
    for key, raw_value in params.logit_bias.items():
        try:
            token_id, value = int(key), float(raw_value)
        except (TypeError, ValueError):
            raise RequestError(
                f"logit_bias maps token ids to numbers, got {key!r}: {raw_value!r}",
                param="logit_bias",
            ) from None
        if not 0 <= token_id < vocab_size:
            raise RequestError(
                f"logit_bias token id {token_id} is outside the vocabulary [0, {vocab_size})",
                param="logit_bias",
            )
        if math.isnan(value) or value == math.inf:
            raise RequestError("logit_bias values must be numbers below +inf", param="logit_bias")
        bias[token_id] = value
    if params.ignore_eos:
        for token_id in eos_token_ids:
            if 0 <= token_id < vocab_size:
                bias[token_id] = -math.inf
    return bias
