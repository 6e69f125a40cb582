"""The catalog's contents, fit marks, recommendations and hardware detection."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from r1serve.catalog import hardware
from r1serve.catalog.catalog import fitting_precisions, load_catalog, recommend
from r1serve.catalog.estimate import count_parameters, estimate_memory
from r1serve.catalog.hardware import MemoryDevice, detect_devices, model_home

GIB = 1 << 30
GPU_24 = MemoryDevice("cuda", 0, "NVIDIA GeForce RTX 4090", 24 * GIB, int(23.5 * GIB))
GPU_80 = MemoryDevice("cuda", 0, "NVIDIA A100-SXM4-80GB", 80 * GIB, 79 * GIB)
CPU_24 = MemoryDevice("cpu", 0, "(RAM)", 24 * GIB, 20 * GIB)


def test_catalog_holds_the_r1_family_and_cpu_models() -> None:
    repos = {e.repo_id for e in load_catalog()}
    for size in ("1.5B", "7B", "14B", "32B"):
        assert f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{size}" in repos
    for size in ("8B", "70B"):
        assert f"deepseek-ai/DeepSeek-R1-Distill-Llama-{size}" in repos
    assert {"deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1-Zero"} <= repos
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in repos
    assert sum(e.family == "small (CPU)" for e in load_catalog()) >= 4


def test_catalog_is_largest_first() -> None:
    sizes = [count_parameters(e.architecture).total for e in load_catalog()]
    assert sizes == sorted(sizes, reverse=True)


def test_r1_is_a_mixture_of_experts_not_a_7b_model() -> None:
    r1 = next(e for e in load_catalog() if e.repo_id == "deepseek-ai/DeepSeek-R1")
    moe = r1.architecture.moe
    assert moe is not None
    assert (moe.routed_experts, moe.shared_experts, moe.dense_layers) == (256, 1, 3)
    assert r1.architecture.num_layers == 61
    assert r1.architecture.latent_attention is not None


@pytest.mark.parametrize(
    ("device", "context", "repo_id", "precision"),
    [
        (GPU_24, 32768, "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "int8"),
        (GPU_24, 4096, "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "int4"),
        (GPU_80, 32768, "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "int4"),
        (CPU_24, 32768, "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "int4"),
    ],
)
def test_recommends_largest_model_and_precision_that_fit(
    device: MemoryDevice, context: int, repo_id: str, precision: str
) -> None:
    choice = recommend(load_catalog(), device.free_bytes, context)
    assert choice is not None
    assert (choice.repo_id, choice.precision) == (repo_id, precision)
    assert choice.total_bytes <= device.free_bytes


def test_recommendation_leaves_room_for_the_kv_cache() -> None:
    # Qwen-32B's int4 weights (17.2 GiB) fit in 23.5 GiB, but not with 32k tokens of KV cache.
    qwen32 = next(e for e in load_catalog() if e.repo_id.endswith("Qwen-32B"))
    estimate = estimate_memory(qwen32.architecture, 32768)
    assert estimate.weight_bytes["int4"] < GPU_24.free_bytes
    assert fitting_precisions(estimate, GPU_24.free_bytes) == []


def test_nothing_fits_in_a_tiny_budget() -> None:
    assert recommend(load_catalog(), GIB // 2, 4096) is None


def test_model_home_prefers_the_gpu_with_most_free_memory() -> None:
    small = MemoryDevice("cuda", 1, "small", 16 * GIB, 15 * GIB)
    assert model_home([CPU_24, small, GPU_24]) == GPU_24
    assert model_home([CPU_24]) == CPU_24


def test_detects_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    free_total = {0: (10 * GIB, 24 * GIB), 1: (70 * GIB, 80 * GIB)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: free_total[index])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU {index}")
    devices = detect_devices()
    assert devices == [
        MemoryDevice("cuda", 0, "GPU 0", 24 * GIB, 10 * GIB),
        MemoryDevice("cuda", 1, "GPU 1", 80 * GIB, 70 * GIB),
    ]
    assert model_home(devices).index == 1


def test_falls_back_to_ram_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    memory = SimpleNamespace(total=24 * GIB, available=20 * GIB)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)
    assert detect_devices() == [CPU_24]
    assert hardware.detect_gpus() == []
