"""`r1serve models` on faked hardware, and `--estimate`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakehub import FakeHub
from r1serve.catalog.hardware import MemoryDevice
from r1serve.cli import _register, app
from support.models import TINY_R1_GGUF, TINY_R1_HF

GIB = 1 << 30
GPU_24 = MemoryDevice("cuda", 0, "NVIDIA GeForce RTX 4090", 24 * GIB, int(23.5 * GIB))
GPU_80 = MemoryDevice("cuda", 0, "NVIDIA H100 80GB HBM3", 80 * GIB, 79 * GIB)
CPU_24 = MemoryDevice("cpu", 0, "(RAM)", 24 * GIB, 20 * GIB)

_register()
runner = CliRunner()


Machine = Callable[..., None]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    """Fake this machine's devices for `r1serve models`."""

    def use(*devices: MemoryDevice, llamacpp: tuple[MemoryDevice, ...] | None = None) -> None:
        monkeypatch.setattr("r1serve.cli.models.detect_devices", lambda: list(devices))
        # llama.cpp sees the same devices unless told (its CPU wheel sees no GPU).
        seen = list(llamacpp if llamacpp is not None else devices)
        monkeypatch.setattr("r1serve.cli.models.detect_llamacpp_devices", lambda: seen)

    return use


@pytest.mark.parametrize(
    ("device", "recommended"),
    [
        (GPU_24, "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B as GGUF Q8_0"),
        (GPU_80, "deepseek-ai/DeepSeek-R1-Distill-Llama-70B as GGUF Q5_K_M"),
        (CPU_24, "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B as GGUF Q5_K_M"),
    ],
)
def test_models_marks_fits_and_recommends_a_gguf_r1serve_serves(
    machine: Machine, device: MemoryDevice, recommended: str
) -> None:
    machine(device)
    result = runner.invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"Recommended: {recommended} on r1serve's llama.cpp engine" in result.stdout
    short = recommended.split("/")[1].split(" ")[0].lower()
    quant = recommended.rsplit(" ", 1)[1].lower()
    assert f"r1serve pull {short}:{quant} && r1serve serve --model {short}:{quant}" in result.stdout
    assert device.name in result.stdout
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in result.stdout
    assert "671B (37.6B active)" in result.stdout
    for column in ("Q4_K_M GiB", "Q5_K_M GiB", "Q8_0 GiB", "bf16 GiB"):
        assert column in result.stdout
    assert "dequantized" not in result.stdout


@pytest.mark.parametrize(
    ("device", "served"),
    [
        (CPU_24, "deepseek-ai/DeepSeek-R1-Distill-Llama-8B in bf16 (--dtype bfloat16"),
        (GPU_80, "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B in bf16 (its default on CUDA)"),
    ],
)
def test_models_names_the_largest_bf16_model_for_the_transformers_engine(
    machine: Machine, device: MemoryDevice, served: str
) -> None:
    machine(device)
    result = runner.invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"On the transformers engine (HF safetensors, --engine transformers): {served}" in (
        result.stdout
    )


def test_models_fits_gguf_in_ram_when_llamacpp_sees_no_gpu(machine: Machine) -> None:
    machine(GPU_80, llamacpp=(CPU_24,))
    result = runner.invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "llama.cpp engine (GGUF): cpu (RAM)" in result.stdout
    assert f"transformers engine (bf16): cuda:0 {GPU_80.name}" in result.stdout
    assert "Recommended: deepseek-ai/DeepSeek-R1-Distill-Qwen-14B as GGUF Q5_K_M" in result.stdout


def test_models_json_and_context(machine: Machine) -> None:
    machine(GPU_24)
    result = runner.invoke(app, ["models", "--json", "--context", "4096"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["context"] == 4096
    assert document["device"]["name"] == GPU_24.name
    recommendation = document["recommendation"]
    assert recommendation == document["r1serve_recommendation"]
    assert recommendation["repo_id"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert (recommendation["engine"], recommendation["quant"]) == ("llamacpp", "Q5_K_M")
    assert recommendation["pull"] == "deepseek-r1-distill-qwen-32b:q5_k_m"
    assert recommendation["gguf_repo"] == "bartowski/DeepSeek-R1-Distill-Qwen-32B-GGUF"
    served = document["transformers_recommendation"]
    assert (served["repo_id"], served["precision"]) == (
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",  # 14B in bf16 needs about 29 GiB at 4k
        "bf16",
    )
    by_repo = {m["repo_id"]: m for m in document["models"]}
    qwen_1_5 = by_repo["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"]
    assert qwen_1_5["kv_bytes_per_1k_tokens"] == 28 * 1024 * 1000
    assert qwen_1_5["short_name"] == "deepseek-r1-distill-qwen-1.5b"
    q4 = qwen_1_5["gguf"]["Q4_K_M"]
    assert q4["kv_bytes"] == 28 * 1024 * 4096 and q4["fits"] is True
    assert q4["total_bytes"] == q4["weight_bytes"] + q4["kv_bytes"] + q4["runtime_bytes"]
    assert q4["pull"] == "deepseek-r1-distill-qwen-1.5b:q4_k_m"
    assert set(qwen_1_5["gguf"]) >= {"Q4_K_M", "Q5_K_M", "Q8_0"}
    assert by_repo["deepseek-ai/DeepSeek-R1"]["gguf"]["Q4_K_M"]["fits"] is False


def test_models_says_when_nothing_fits(machine: Machine) -> None:
    machine(MemoryDevice("cpu", 0, "(RAM)", GIB, GIB // 4))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "Nothing in the catalog fits" in result.stdout


def test_estimate_local_folder_and_gguf(machine: Machine) -> None:
    machine(CPU_24)
    result = runner.invoke(app, ["models", "--estimate", str(TINY_R1_HF), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parameters"] == 9_806_400
    result = runner.invoke(app, ["models", "--estimate", str(TINY_R1_GGUF)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (
        "as stored (F16), llama.cpp" in result.stdout and "GGUF Q4_K_M, llama.cpp" in result.stdout
    )
    assert "9.81M" in result.stdout
    result = runner.invoke(app, ["models", "--estimate", str(TINY_R1_GGUF), "--json"])
    stored = json.loads(result.stdout)["llamacpp"]["stored"]
    assert stored["weight_bytes"] == 19_761_408 and stored["fits"] is True


def test_estimate_hub_repo_through_a_mirror(
    machine: Machine, fake_hub: FakeHub, second_hub: FakeHub
) -> None:
    machine(GPU_80)
    args = ["models", "--estimate", "r1serve-test/tiny-r1", "--mirror", second_hub.url, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "hub"
    assert second_hub.log and not fake_hub.log


def test_estimate_failure_is_one_line_and_non_zero(machine: Machine, tmp_path: Path) -> None:
    machine(CPU_24)
    result = runner.invoke(app, ["models", "--estimate", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.startswith("r1serve: error: ") and result.stderr.count("\n") == 1
