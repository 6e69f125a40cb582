"""sample / adjust_logits / SequenceSampler: batched token selection with per-row parameters."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1serve.engine.protocol import GREEDY_BELOW, SamplingParams
from r1serve.engine.transformers import sampling
from r1serve.engine.transformers.sampling import SequenceSampler, adjust_logits, sample
from r1serve.errors import RequestError


def make(vocab: int, prompt: tuple[int, ...] = (), **params: Any) -> SequenceSampler:
    return SequenceSampler(SamplingParams(**params), prompt, vocab)


def run(logits: torch.Tensor, samplers: list[SequenceSampler], steps: int) -> list[list[int]]:
    """Sample ``steps`` times from fixed logits, feeding tokens back; returns per-row tokens."""
    out: list[list[int]] = [[] for _ in samplers]
    for _ in range(steps):
        for row, token in enumerate(sample(logits, samplers).tolist()):
            out[row].append(token)
            samplers[row].observe(token)
    return out


def test_greedy_is_argmax_with_ties_to_lowest_id() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    logits[2, [7, 3, 40]] = 100.0  # a three-way tie
    samplers = [make(50, temperature=0.0) for _ in range(5)]
    tokens = sample(logits, samplers)
    assert tokens.dtype == torch.int64 and tokens.shape == (5,)
    assert tokens.tolist() == logits.argmax(dim=-1).tolist()
    assert tokens[2] == 3


def test_greedy_rows_in_a_mixed_batch_and_tie_break_with_bias() -> None:
    logits = torch.zeros(3, 20)
    logits[:, 9] = logits[:, 4] = 5.0
    samplers = [make(20, temperature=0.0), make(20, seed=1), make(20, temperature=0, top_k=3)]
    samplers.append(make(20, temperature=0.0, logit_bias={4: -1.0}))
    logits = torch.cat([logits, logits[:1]])
    tokens = sample(logits, samplers).tolist()
    assert tokens[0] == 4 and tokens[2] == 4 and tokens[3] == 9
    assert tokens[1] in (4, 9)


def test_top_k_one_equals_greedy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(8, 300) * 4  # continuous values: no ties
    samplers = [make(300, seed=row, top_k=1, temperature=1.5) for row in range(8)]
    for _ in range(5):
        assert sample(logits, samplers).tolist() == logits.argmax(dim=-1).tolist()


def test_seeded_rows_ignore_batch_composition_and_position() -> None:
    torch.manual_seed(2)
    row = torch.randn(1000) * 2
    others = torch.randn(6, 1000) * 2
    settings_list: list[dict[str, Any]] = [
        {"temperature": 0.7},
        {"temperature": 0.6, "top_p": 0.95},
        {"top_k": 40, "min_p": 0.05},
        {"temperature": 1.3, "repetition_penalty": 1.2, "frequency_penalty": 0.5},
    ]
    for params in settings_list:
        alone = run(row[None], [make(1000, seed=1234, **params)], 30)[0]
        neighbours = [
            make(1000, seed=7, top_p=0.5),
            make(1000, temperature=0.0),
            make(1000, presence_penalty=1.0),  # random seed
        ]
        batch = torch.cat([others[:3], row[None], others[3:]])
        samplers = [*neighbours, make(1000, seed=1234, **params)]
        samplers += [make(1000, top_k=5), make(1000), make(1000, seed=9, temperature=0.0)]
        assert run(batch, samplers, 30)[3] == alone
        assert len(set(alone)) > 1  # it really sampled


def test_same_seed_same_tokens_different_seed_differs() -> None:
    logits = torch.zeros(2, 5000)  # uniform: any difference in randomness shows
    first = run(logits, [make(5000, seed=5), make(5000, seed=5)], 20)
    assert first[0] == first[1]
    other = run(logits[:1], [make(5000, seed=6)], 20)[0]
    unseeded = run(logits, [make(5000), make(5000)], 20)
    assert other != first[0] and unseeded[0] != unseeded[1]


def test_huge_and_negative_seeds_are_accepted() -> None:
    logits = torch.zeros(1, 100)
    assert run(logits, [make(100, seed=2**70)], 3) == run(logits, [make(100, seed=2**70)], 3)
    assert run(logits, [make(100, seed=-1)], 3)[0]


def reference_allowed(row: list[float], params: SamplingParams, token: int) -> bool:
    """Whether ``token`` survives top-k, top-p and min-p (float64, tolerant at exact edges)."""
    scaled = [v / params.temperature for v in row]
    top = max(scaled)
    weights = [math.exp(v - top) for v in scaled]
    ranked = sorted(weights, reverse=True)
    k = params.top_k or len(row)
    if weights[token] < ranked[min(k, len(row)) - 1] * (1 - 1e-6):
        return False
    kept_total = sum(ranked[:k])
    above = sum(w for w in ranked[:k] if w > weights[token] * (1 + 1e-6))
    if params.top_p < 1 and above / kept_total >= params.top_p + 1e-5:
        return False
    return weights[token] >= params.min_p - 1e-6


logit_rows = st.lists(
    st.floats(-8, 8, allow_nan=False).map(lambda v: round(v, 1)), min_size=2, max_size=40
)
filter_params = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.3, 1.0, 2.5]),
    top_k=st.integers(0, 8),
    top_p=st.sampled_from([1.0, 0.9, 0.5, 0.2, 0.01]),
    min_p=st.sampled_from([0.0, 0.05, 0.5, 0.99]),
    seed=st.integers(0, 2**32),
)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(logit_rows, min_size=1, max_size=4),
    data=st.data(),
    candidates=st.sampled_from([2, 3, 512]),
)
def test_filters_never_pick_masked_tokens(
    rows: list[list[float]], data: Any, candidates: int
) -> None:
    vocab = max(len(r) for r in rows)
    rows = [r + [-1e4] * (vocab - len(r)) for r in rows]
    params = [data.draw(filter_params) for _ in rows]
    samplers = [SequenceSampler(p, (), vocab) for p in params]
    logits = torch.tensor(rows, dtype=torch.float32)
    with pytest.MonkeyPatch.context() as patch:
        # A tiny candidate set forces the full-sort fallback on most rows.
        patch.setattr(sampling, "_CANDIDATES", candidates)
        for _ in range(3):
            for row, token in enumerate(sample(logits, samplers).tolist()):
                assert reference_allowed(rows[row], params[row], token), (row, token)


def chi_square(counts: Counter[int], probs: list[float], draws: int) -> float:
    return sum((counts[i] - draws * p) ** 2 / (draws * p) for i, p in enumerate(probs) if p > 0)


@pytest.mark.parametrize("vocab", [6, 3000])  # one inverse-CDF block, and several
def test_sampling_at_temperature_one_matches_softmax(vocab: int) -> None:
    probs6 = [0.4, 0.25, 0.15, 0.1, 0.07, 0.03]
    spots = [0, 1, 1023, 1024, 2047, 2999] if vocab > 6 else list(range(6))  # across blocks
    logits = torch.full((1, vocab), -math.inf)
    for spot, p in zip(spots, probs6, strict=True):
        logits[0, spot] = math.log(p) + 3.0  # shifted: softmax must not care
    batch, steps = 500, 16
    samplers = [make(vocab, seed=1000 + row) for row in range(batch)]
    counts: Counter[int] = Counter()
    for _ in range(steps):
        counts.update(sample(logits.expand(batch, vocab), samplers).tolist())
    assert set(counts) <= set(spots)  # zero-probability tokens never drawn
    by_rank = Counter({rank: counts[spot] for rank, spot in enumerate(spots)})
    # df = 5; P(chi2 > 25.7) = 1e-4. Fixed seeds make this deterministic, not flaky.
    assert chi_square(by_rank, probs6, batch * steps) < 25.7


def test_top_p_distribution_is_renormalized_nucleus() -> None:
    probs = [0.5, 0.3, 0.15, 0.05]
    logits = torch.tensor([[math.log(p) for p in probs]])
    batch = 4000
    samplers = [make(4, seed=row, top_p=0.8) for row in range(batch)]
    counts = Counter(sample(logits.expand(batch, 4), samplers).tolist())
    assert set(counts) == {0, 1}  # mass before token 2 is 0.8: not < top_p
    assert chi_square(counts, [0.5 / 0.8, 0.3 / 0.8], batch) < 15.1  # df 1, P = 1e-4


def test_wide_flat_distribution_uses_full_sort_fallback() -> None:
    vocab = 5000
    # Nearly flat and strictly decreasing: the 512 candidates are ids 0..511, but the 0.99
    # nucleus spans almost the whole vocabulary.
    logits = -torch.arange(vocab, dtype=torch.float32)[None] * 1e-4
    logits = logits.expand(2, vocab).clone()
    logits[1, :10] += 1.0
    samplers = [make(vocab, seed=3, top_p=0.99), make(vocab, seed=4, top_p=0.99)]
    tokens = run(logits, samplers, 40)
    beyond = [token for token in tokens[0] if token >= 512]
    assert len(beyond) > 25
    assert max(tokens[0]) < 4960  # the last ~1% of the mass stays cut off


def test_repetition_penalty_hf_semantics() -> None:
    logits = torch.tensor([[2.0, -2.0, 3.0, -1.0, 0.0, 4.0]])
    sampler = make(6, prompt=(0, 1), temperature=0.0, repetition_penalty=2.0)
    sampler.observe(4)
    sampler.observe(5)
    adjusted = adjust_logits(logits, [sampler])
    assert adjusted.tolist() == [[1.0, -4.0, 3.0, -1.0, 0.0, 2.0]]
    assert logits.tolist() == [[2.0, -2.0, 3.0, -1.0, 0.0, 4.0]]  # input untouched


def test_presence_and_frequency_penalties_openai_semantics() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    sampler = make(4, prompt=(0, 0, 0), presence_penalty=0.5, frequency_penalty=0.25)
    for token in (1, 2, 2, 2):
        sampler.observe(token)
    assert adjust_logits(logits, [sampler]).tolist() == [[1.0, 0.25, -0.25, 1.0]]
    sampler.observe(1)  # counts accumulate across steps
    assert adjust_logits(logits, [sampler]).tolist() == [[1.0, 0.0, -0.25, 1.0]]


def test_all_penalties_and_bias_combined_per_row() -> None:
    torch.manual_seed(3)
    logits = torch.randn(3, 10)
    samplers = [
        make(10, prompt=(1,), repetition_penalty=1.5, presence_penalty=1.0, logit_bias={2: 3}),
        make(10),
        make(10, frequency_penalty=-1.0),
    ]
    for token in (1, 3, 3):
        samplers[0].observe(token)
        samplers[2].observe(token)
    expected = logits.clone()
    for token in (1, 3):
        value = expected[0, token]
        expected[0, token] = value / 1.5 if value > 0 else value * 1.5
        expected[0, token] -= 1.0
    expected[0, 2] += 3.0
    expected[2, 1] += 1.0
    expected[2, 3] += 2.0
    assert torch.equal(adjust_logits(logits, samplers), expected)


def test_logit_bias_bans_tokens() -> None:
    logits = torch.tensor([[5.0, 4.9, 0.0, -1.0]])
    for ban in (-100.0, -1e9, -math.inf):
        samplers = [make(4, temperature=0.0, logit_bias={0: ban})]
        assert sample(logits, samplers).item() == 1
        drawn = run(logits, [make(4, seed=1, logit_bias={0: ban, 1: ban})], 200)[0]
        assert 0 not in drawn and 1 not in drawn


def test_ignore_eos_bans_eos_tokens() -> None:
    logits = torch.tensor([[9.0, 0.0, 8.0, 0.0]])
    params = SamplingParams(temperature=0.0, ignore_eos=True)
    assert sample(logits, [SequenceSampler(params, (), 4, eos_token_ids={0})]).item() == 2
    plain = SamplingParams(temperature=0.0)
    assert sample(logits, [SequenceSampler(plain, (), 4, eos_token_ids={0})]).item() == 0


def test_bad_requests_raise_request_errors() -> None:
    with pytest.raises(RequestError) as error:
        make(10, logit_bias={10: 1.0})
    assert error.value.param == "logit_bias"
    with pytest.raises(RequestError):
        make(10, logit_bias={-1: 1.0})
    with pytest.raises(RequestError):
        make(10, logit_bias={1: math.nan})
    with pytest.raises(RequestError):
        make(10, logit_bias={"one": 1.0})
    assert make(10, logit_bias={"3": -5}).adjusts_logits  # JSON-style string keys
    with pytest.raises(RequestError):
        make(10, prompt=(3, 12), repetition_penalty=1.1)


def test_caller_mistakes_raise_value_errors() -> None:
    sampler = make(10)
    with pytest.raises(ValueError, match="vocabulary"):
        sampler.observe(10)
    with pytest.raises(ValueError, match="samplers"):
        sample(torch.zeros(2, 10), [sampler])
    with pytest.raises(ValueError, match="columns"):
        sample(torch.zeros(1, 11), [sampler])


def test_bfloat16_logits_and_unmodified_input() -> None:
    torch.manual_seed(4)
    logits = torch.randn(4, 64).to(torch.bfloat16)
    before = logits.clone()
    samplers = [make(64, seed=row, top_p=0.9, presence_penalty=0.5) for row in range(4)]
    tokens = sample(logits, samplers)
    assert tokens.dtype == torch.int64 and torch.equal(logits, before)


def test_observe_is_cheap_bookkeeping() -> None:
    sampler = make(1000, presence_penalty=1.0)
    for token in range(500):
        sampler.observe(token)
    assert len(sampler._pending) == 500  # nothing touched a tensor yet
    adjust_logits(torch.zeros(1, 1000), [sampler])
    assert not sampler._pending


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_same_tokens_as_cpu() -> None:
    torch.manual_seed(5)
    vocab = 152064
    logits = torch.randn(16, vocab) * 3

    def batch() -> list[SequenceSampler]:
        return [
            make(vocab, seed=row, temperature=0.6, top_p=0.95, repetition_penalty=1.1)
            if row % 2
            else make(vocab, seed=row, temperature=0.0 if row % 4 == 0 else 1.0)
            for row in range(16)
        ]

    on_cpu = run(logits, batch(), 10)
    on_gpu = run(logits.cuda(), batch(), 10)
    assert on_cpu == on_gpu


# Tiny temperatures (issue #14): 1e-46 rounds to 0 in float32, and logits / 0 is NaN.

TINY_TEMPERATURES = [1e-46, 1e-100, 5e-324, 1e-30, 1e-6, 9.99e-6]
_logit = st.floats(-1e4, 1e4, width=32) | st.just(-math.inf)
_logit_rows = st.lists(_logit, min_size=2, max_size=40).filter(
    lambda row: any(math.isfinite(x) for x in row)
)
# The whole accepted range, with the subnormal and tiny end drawn as often as the rest.
_temperature = (
    st.floats(0.0, 100.0)
    | st.floats(5e-324, 1e-5)
    | st.sampled_from([*TINY_TEMPERATURES, GREEDY_BELOW])
)


@pytest.mark.parametrize("temperature", TINY_TEMPERATURES)
def test_tiny_temperatures_pick_the_argmax(temperature: float) -> None:
    torch.manual_seed(3)
    logits = torch.randn(4, 300) * 5
    logits[1, 7] = logits[1, 200] = 50.0  # a tie: the lowest id, like temperature 0
    samplers = [make(300, temperature=temperature, seed=row, top_p=0.9) for row in range(4)]
    assert sample(logits, samplers).tolist() == logits.argmax(dim=-1).tolist()


@settings(max_examples=300, deadline=None)
@given(
    row=_logit_rows,
    temperature=_temperature,
    top_p=st.floats(0.01, 1.0),
    top_k=st.integers(0, 50),
    seed=st.integers(0, 2**32),
)
def test_any_accepted_temperature_samples_a_token_with_a_finite_logit(
    row: list[float], temperature: float, top_p: float, top_k: int, seed: int
) -> None:
    logits = torch.tensor([row], dtype=torch.float32)
    sampler = make(len(row), temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    token = int(sample(logits, [sampler])[0])
    assert math.isfinite(row[token]), (row, temperature, token)


@settings(max_examples=300, deadline=None)
@given(
    row=st.lists(st.floats(-1e3, 1e3, width=32), min_size=2, max_size=40),
    best=st.integers(0, 39),
    temperature=st.floats(5e-324, 1e-3),
    seed=st.integers(0, 2**32),
)
def test_the_greedy_limit_is_continuous(
    row: list[float], best: int, temperature: float, seed: int
) -> None:
    """Near 0 the draw is the argmax whenever the best logit leads by 1 (1 / 1e-3 = 1000: every
    other weight is exp(-1000) = 0), on either side of the greedy threshold."""
    best %= len(row)
    row[best] = max(row) + 1.0
    logits = torch.tensor([row], dtype=torch.float32)
    token = int(sample(logits, [make(len(row), temperature=temperature, seed=seed)])[0])
    assert token == best, (row, temperature)
