"""GGUF sizes as llama-quantize types tensors, and the llama.cpp engine's memory."""

from __future__ import annotations

import pytest

from r1serve.catalog.catalog import find_entry, find_short_name, load_catalog, recommend_gguf
from r1serve.catalog.estimate import Architecture, architecture_from_hf_config
from r1serve.catalog.quants import (
    GGUF_QUANTS,
    Matrix,
    gguf_repacked_bytes,
    gguf_weight_bytes,
    llamacpp_context,
    quant_memory,
    tensor_type,
    use_more_bits,
)

GIB = 1 << 30

# File sizes of published GGUFs (bartowski's and unsloth's repos of each model, as their pages
# round them; a file adds a few MB of header and tokenizer to the tensor bytes).
PUBLISHED_GGUF_BYTES = {
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Q4_K_M"): 4.68e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Q5_K_M"): 5.44e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Q6_K"): 6.25e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Q8_0"): 8.10e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Q4_K_M"): 1.12e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Q8_0"): 1.89e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "Q4_K_M"): 4.92e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "Q8_0"): 8.54e9,
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "Q4_K_M"): 42.5e9,
    ("deepseek-ai/DeepSeek-R1", "Q4_K_M"): 404e9,
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "Q4_K_M"): 105_454_432,
}


def _arch(repo_id: str) -> Architecture:
    entry = find_entry(repo_id)
    assert entry is not None
    return entry.architecture


@pytest.mark.parametrize(("key", "published"), sorted(PUBLISHED_GGUF_BYTES.items()))
def test_gguf_sizes_match_published_files(key: tuple[str, str], published: float) -> None:
    repo_id, quant = key
    size = gguf_weight_bytes(_arch(repo_id), quant)
    assert abs(published - size) / published < 0.025, f"{repo_id} {quant}: {size:,}"


def test_use_more_bits_picks_first_and_last_eighth_and_every_third_between() -> None:
    chosen = [i for i in range(28) if use_more_bits(i, 28)]
    assert chosen == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]


def test_q4_k_m_types_like_llama_quantize() -> None:
    q4 = GGUF_QUANTS["Q4_K_M"]
    assert tensor_type(q4, Matrix("matrix", 3, 1536 * 1536, 1536), 28) == "Q4_K"
    assert tensor_type(q4, Matrix("attn_v", 0, 1536 * 256, 1536), 28) == "Q6_K"
    assert tensor_type(q4, Matrix("ffn_down", 3, 8960 * 1536, 8960), 28) == "Q4_K"
    assert tensor_type(q4, Matrix("ffn_down", 5, 8960 * 1536, 8960), 28) == "Q6_K"
    assert tensor_type(q4, Matrix("output", -1, 151936 * 1536, 1536), 28) == "Q6_K"
    assert tensor_type(q4, Matrix("vector", 0, 1536, 1), 28) == "F32"
    # 576-wide rows do not split into 256-value blocks: llama.cpp falls back to 32-value types.
    assert tensor_type(q4, Matrix("matrix", 3, 576 * 576, 576), 30) == "Q5_0"
    assert tensor_type(q4, Matrix("output", -1, 49152 * 576, 576), 30) == "Q8_0"


def test_llamacpp_memory_adds_f16_kv_for_the_padded_context_and_runtime() -> None:
    arch = _arch("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    memory = quant_memory(arch, "Q4_K_M", 4000)
    assert llamacpp_context(4000) == 4096
    assert memory.kv_bytes == 28 * 2 * 4 * 128 * 2 * 4096
    assert memory.weight_bytes == gguf_weight_bytes(arch, "Q4_K_M")
    repacked = gguf_repacked_bytes(arch, "Q4_K_M")  # the Q4_K matrices, not the embedding
    assert 0.5 * memory.weight_bytes < repacked < 0.8 * memory.weight_bytes
    assert 100 << 20 < memory.runtime_bytes - repacked < 400 << 20
    gpu = quant_memory(arch, "Q4_K_M", 4000, gpu=True)
    assert gpu.runtime_bytes - (memory.runtime_bytes - repacked) == 512 << 20  # CUDA, no repack
    assert gguf_repacked_bytes(arch, "Q8_0") == 0


def test_recommends_largest_model_at_the_best_quant_that_fits() -> None:
    choice = recommend_gguf(load_catalog(), 20 * GIB, 32768)
    assert choice is not None
    assert (choice.entry.repo_id, choice.quant) == (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
        "Q5_K_M",
    )
    assert choice.memory.total_bytes <= 20 * GIB
    assert choice.pull_name == "deepseek-r1-distill-qwen-14b:q5_k_m"
    small = recommend_gguf(load_catalog(), 8 * GIB, 32768)
    assert small is not None and small.entry.repo_id.endswith("Qwen-7B")
    assert recommend_gguf(load_catalog(), GIB // 8, 4096) is None


def test_every_catalog_model_has_a_gguf_repo_and_a_short_name() -> None:
    for entry in load_catalog():
        assert entry.gguf_repo.endswith("-GGUF"), entry.repo_id
        assert find_short_name(entry.short_name.upper()) == entry
    assert find_short_name("deepseek-r1-distill-qwen-7b") == find_entry(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    )


def test_moe_gguf_counts_every_expert() -> None:
    r1 = _arch("deepseek-ai/DeepSeek-R1")
    dense = architecture_from_hf_config(
        {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 256,
         "intermediate_size": 512, "num_attention_heads": 4, "vocab_size": 1024}
    )  # fmt: skip
    assert gguf_weight_bytes(r1, "Q8_0") > 700e9
    assert gguf_weight_bytes(dense, "Q4_K_M") < gguf_weight_bytes(dense, "Q8_0")
