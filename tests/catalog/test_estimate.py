"""Parameter counts against published totals; KV cache and memory arithmetic."""

from __future__ import annotations

import json

import pytest

from r1serve.catalog.catalog import find_entry
from r1serve.catalog.estimate import (
    RUNTIME_OVERHEAD_BYTES,
    Architecture,
    architecture_from_hf_config,
    count_parameters,
    estimate_memory,
    kv_cache_bytes_per_token,
    weight_bytes,
)
from r1serve.errors import UnsupportedModelError
from support.models import TINY_R1_HF

# Published totals (model cards / hub "Model size"); R1's 671B excludes its 14B MTP module.
PUBLISHED_TOTALS = {
    "deepseek-ai/DeepSeek-R1": 671e9,
    "deepseek-ai/DeepSeek-R1-Zero": 671e9,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 1.78e9,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": 7.62e9,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": 14.8e9,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": 32.8e9,
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": 8.03e9,
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": 70.6e9,
    "HuggingFaceTB/SmolLM2-135M-Instruct": 135e6,
    "HuggingFaceTB/SmolLM2-360M-Instruct": 362e6,
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": 1.71e9,
    "Qwen/Qwen2.5-0.5B-Instruct": 0.494e9,
    "Qwen/Qwen2.5-1.5B-Instruct": 1.54e9,
    "Qwen/Qwen2.5-3B-Instruct": 3.09e9,
}

# KV cache per token in bf16, from ../shared/reference/performance.md.
KV_KIB_PER_TOKEN = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 28,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": 56,
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": 128,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": 192,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": 256,
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": 320,
}


def _entry_arch(repo_id: str) -> Architecture:
    entry = find_entry(repo_id)
    assert entry is not None, repo_id
    return entry.architecture


@pytest.mark.parametrize(("repo_id", "published"), sorted(PUBLISHED_TOTALS.items()))
def test_parameter_count_is_within_two_percent_of_published(repo_id: str, published: float) -> None:
    total = count_parameters(_entry_arch(repo_id)).total
    assert abs(total - published) / published < 0.02, f"{repo_id}: {total:,} vs {published:,.0f}"


@pytest.mark.parametrize("repo_id", ["deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1-Zero"])
def test_r1_has_37b_active_parameters(repo_id: str) -> None:
    count = count_parameters(_entry_arch(repo_id))
    assert abs(count.active - 37e9) / 37e9 < 0.02
    assert count.active < count.total / 15


def test_dense_models_use_all_their_parameters() -> None:
    count = count_parameters(_entry_arch("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"))
    assert count.active == count.total


def test_tiny_r1_count_is_exact() -> None:
    # UPSTREAM_README.md: 9,806,400 parameters, tied embeddings, q/k/v biases.
    config = json.loads((TINY_R1_HF / "config.json").read_text())
    assert count_parameters(architecture_from_hf_config(config)).total == 9_806_400


@pytest.mark.parametrize(("repo_id", "kib"), sorted(KV_KIB_PER_TOKEN.items()))
def test_kv_cache_per_token_matches_reference(repo_id: str, kib: int) -> None:
    assert kv_cache_bytes_per_token(_entry_arch(repo_id)) == kib * 1024


def test_r1_caches_the_compressed_latent() -> None:
    # MLA: kv_lora_rank 512 + rope key 64 values per layer, 61 layers, 2 bytes each.
    assert kv_cache_bytes_per_token(_entry_arch("deepseek-ai/DeepSeek-R1")) == 61 * 576 * 2


def test_mixtral_style_moe_counts_total_and_active() -> None:
    # Mixtral-8x7B: 46.7B total, 12.9B active (Mistral's announcement).
    config = {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "tie_word_embeddings": False,
    }
    count = count_parameters(architecture_from_hf_config(config))
    assert abs(count.total - 46.7e9) / 46.7e9 < 0.02
    assert abs(count.active - 12.9e9) / 12.9e9 < 0.02


def test_qwen3_head_dim_and_qk_norm() -> None:
    # Qwen3-0.6B: head_dim 128 is wider than hidden/heads (64); 0.6B parameters.
    config = {
        "model_type": "qwen3",
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    }
    arch = architecture_from_hf_config(config)
    assert arch.qk_norm and arch.head_dim == 128
    assert abs(count_parameters(arch).total - 0.6e9) / 0.6e9 < 0.02


def test_multimodal_config_reads_text_config() -> None:
    inner = json.loads((TINY_R1_HF / "config.json").read_text())
    outer = {"model_type": "llava", "text_config": inner, "vision_config": {}}
    assert count_parameters(architecture_from_hf_config(outer)).total == 9_806_400


def test_weight_bytes_per_precision() -> None:
    assert weight_bytes(1_000_000, "bf16") == 2_000_000
    assert weight_bytes(1_000_000, "int8") == 1_062_500  # 8.5 bits: Q8_0 scales
    assert weight_bytes(1_000_000, "int4") == 562_500  # 4.5 bits: Q4_0 scales


def test_total_adds_kv_at_context_and_overhead() -> None:
    arch = _entry_arch("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B")
    estimate = estimate_memory(arch, 32768)
    assert estimate.kv_bytes_at_context == 192 * 1024 * 32768  # 6 GiB, as performance.md says
    assert estimate.kv_bytes_per_1k_tokens == 192 * 1024 * 1000
    expected = estimate.weight_bytes["bf16"] + 6 * (1 << 30) + RUNTIME_OVERHEAD_BYTES
    assert estimate.total_bytes("bf16") == expected


def test_non_positive_context_is_refused() -> None:
    with pytest.raises(ValueError, match="context"):
        estimate_memory(_entry_arch("Qwen/Qwen2.5-0.5B-Instruct"), 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_size": None}, "no hidden_size"),
        ({"num_hidden_layers": -1}, "non-negative"),
        ({"vocab_size": "many"}, "non-negative"),
        ({"num_attention_heads": 0}, "is 0"),
    ],
)
def test_broken_configs_raise_clear_errors(change: dict[str, object], message: str) -> None:
    config = json.loads((TINY_R1_HF / "config.json").read_text())
    config.update(change)
    with pytest.raises(UnsupportedModelError, match=message):
        architecture_from_hf_config({k: v for k, v in config.items() if v is not None})
