"""The llama.cpp engine's KV plan on a CPU: a budget from the weights' size, not from free RAM.

llama.cpp makes its whole KV reservation resident at start-up; with 30% of the free RAM the
90 MB embedded model held 720 MiB of cache and a 1.1 GB R1 distill 6.8 GB on a 24 GB machine.
"""

from __future__ import annotations

import pytest

from r1serve.engine.kv import CPU, KVPlan, plan_kv
from r1serve.engine.llamacpp import build
from r1serve.engine.llamacpp.build import (
    CPU_MIN_SLOT_TOKENS,
    CPU_SLOTS,
    MIB,
    cpu_budget,
    prompt_cache_mib,
)
from support.api import make_settings

GIB = 1024**3
SMOL_PER_TOKEN = 30 * 3 * 64 * 2 * 2  # SmolLM2-135M, f16
DISTILL_PER_TOKEN = 28 * 2 * 128 * 2 * 2  # R1-Distill-Qwen-1.5B, f16


@pytest.fixture(autouse=True)
def plenty_of_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 24 GB machine, whatever this one has free."""
    monkeypatch.setattr(
        build, "available_memory", lambda device: (int(0.3 * 22 * GIB), "30% of 22.0 GiB")
    )


def plan(settings_kw: dict[str, int], weights: int, per_token: int, context: int) -> KVPlan:
    settings = make_settings(**settings_kw)
    return plan_kv(
        per_token=per_token,
        formula="f",
        context_length=context,
        device=CPU,
        max_slots=settings.max_num_seqs or CPU_SLOTS,
        kv_cache_tokens=settings.kv_cache_tokens,
        budget=cpu_budget(settings, weights, per_token, context),
    )


def test_a_small_model_gets_four_slots_of_2048_tokens() -> None:
    kv = plan({}, weights=94 * MIB, per_token=SMOL_PER_TOKEN, context=8192)
    assert (kv.max_slots, kv.max_seq_len) == (CPU_SLOTS, CPU_MIN_SLOT_TOKENS)
    assert kv.total_bytes == 180 * MIB
    assert "2x the 94 MiB of weights" in kv.derivation
    assert "--max-model-len or --kv-cache-tokens for more" in kv.derivation


def test_an_r1_distill_gets_twice_its_weights_not_a_third_of_the_ram() -> None:
    weights = 1_120 * MIB  # Q4_K_M of the 1.5B distill
    kv = plan({}, weights=weights, per_token=DISTILL_PER_TOKEN, context=131072)
    assert kv.max_slots == CPU_SLOTS
    assert kv.total_bytes <= 2 * weights
    assert kv.max_seq_len >= 16384  # room for a long chain of thought


def test_a_short_model_context_is_never_exceeded() -> None:
    kv = plan({}, weights=10 * MIB, per_token=SMOL_PER_TOKEN, context=1024)
    assert kv.max_seq_len == 1024


@pytest.mark.parametrize("given", [{"max_model_len": 8192}, {"kv_cache_tokens": 32768}])
def test_an_explicit_context_or_cache_size_plans_from_free_memory(given: dict[str, int]) -> None:
    assert cpu_budget(make_settings(**given), 94 * MIB, SMOL_PER_TOKEN, 8192) is None


def test_more_slots_keep_2048_tokens_each() -> None:
    kv = plan({"max_num_seqs": 16}, weights=94 * MIB, per_token=SMOL_PER_TOKEN, context=8192)
    assert (kv.max_slots, kv.max_seq_len) == (16, CPU_MIN_SLOT_TOKENS)


def test_little_free_memory_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "available_memory", lambda device: (100 * MIB, "30% of little"))
    budget = cpu_budget(make_settings(), 94 * MIB, SMOL_PER_TOKEN, 8192)
    assert budget == (100 * MIB, "30% of little")


def test_the_prompt_cache_in_ram_holds_one_slot_not_8_gib() -> None:
    kv = plan({}, weights=94 * MIB, per_token=SMOL_PER_TOKEN, context=8192)
    assert prompt_cache_mib(kv) == 45  # 2048 tokens x 22.5 KiB


@pytest.mark.slow
def test_make_runs_plan_for_the_embedded_model_is_printed_at_start_up() -> None:
    from r1serve.engine.registry import build_engine

    lines = "\n".join(build_engine(make_settings(model=None)).summary)
    assert "engine: llamacpp" in lines
    assert "KV cache: 4 sequences x 2048 tokens" in lines
    assert "prompt cache in RAM up to 45 MiB" in lines
