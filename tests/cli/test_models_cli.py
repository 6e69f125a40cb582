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

    def use(*devices: MemoryDevice) -> None:
        monkeypatch.setattr("r1serve.cli.models.detect_devices", lambda: list(devices))

    return use


@pytest.mark.parametrize(
    ("device", "recommended"),
    [
        (GPU_24, "Recommended: deepseek-ai/DeepSeek-R1-Distill-Qwen-14B in int8"),
        (GPU_80, "Recommended: deepseek-ai/DeepSeek-R1-Distill-Llama-70B in int4"),
        (CPU_24, "Recommended: deepseek-ai/DeepSeek-R1-Distill-Qwen-14B in int4"),
    ],
)
def test_models_marks_fits_and_recommends(
    machine: Machine, device: MemoryDevice, recommended: str
) -> None:
    machine(device)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert recommended in result.stdout
    assert device.name in result.stdout
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in result.stdout
    assert "671B (37.6B active)" in result.stdout


@pytest.mark.parametrize(
    ("device", "served"),
    [
        (CPU_24, "deepseek-ai/DeepSeek-R1-Distill-Llama-8B in bf16 (--dtype bfloat16"),
        (GPU_80, "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B in bf16 (its default on CUDA)"),
    ],
)
def test_models_says_what_r1serve_itself_serves_when_the_pick_is_quantized(
    machine: Machine, device: MemoryDevice, served: str
) -> None:
    machine(device)
    result = runner.invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "needs a quantized runtime" in result.stdout
    assert f"The largest it serves here: {served}" in result.stdout


def test_no_serving_line_when_the_pick_is_already_bf16(machine: Machine) -> None:
    machine(MemoryDevice("cuda", 0, "a big pod", 2048 * GIB, 2000 * GIB))
    result = runner.invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "Recommended: deepseek-ai/DeepSeek-R1 in bf16" in result.stdout
    assert "quantized runtime" not in result.stdout


def test_models_json_and_context(machine: Machine) -> None:
    machine(GPU_24)
    result = runner.invoke(app, ["models", "--json", "--context", "4096"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["context"] == 4096
    assert document["device"]["name"] == GPU_24.name
    assert document["recommendation"]["repo_id"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    served = document["r1serve_recommendation"]
    assert (served["repo_id"], served["precision"]) == (
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",  # 14B in bf16 needs about 29 GiB at 4k
        "bf16",
    )
    by_repo = {m["repo_id"]: m for m in document["models"]}
    qwen_1_5 = by_repo["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"]
    assert qwen_1_5["kv_bytes_per_1k_tokens"] == 28 * 1024 * 1000
    assert qwen_1_5["fits"] == ["bf16", "int8", "int4"]
    assert by_repo["deepseek-ai/DeepSeek-R1"]["fits"] == []


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
    result = runner.invoke(app, ["models", "--estimate", str(TINY_R1_GGUF)])
    assert result.exit_code == 0, result.output
    assert "as stored (F16)" in result.stdout
    assert "9.81M" in result.stdout


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
