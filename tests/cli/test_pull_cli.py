"""`r1serve pull`, `ls`, `rm` through the CLI against the fake hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakehub import FakeHub, dead_url
from r1serve.cli import _register, app

_register()
runner = CliRunner()
TINY = "r1serve-test/tiny-r1"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R1SERVE_DATA_DIR", str(tmp_path))
    return tmp_path


def test_pull_with_mirror_then_ls_and_rm(fake_hub: FakeHub, data_dir: Path) -> None:
    result = runner.invoke(app, ["pull", TINY, "--mirror", dead_url(), "--mirror", fake_hub.url])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == TINY
    assert "skipped 4 files" in result.stderr

    listed = runner.invoke(app, ["ls"])
    assert listed.exit_code == 0
    assert TINY in listed.stdout and "safetensors" in listed.stdout and "bfloat16" in listed.stdout
    [row] = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert row["name"] == TINY and Path(row["path"]).is_dir()

    declined = runner.invoke(app, ["rm", TINY], input="n\n")
    assert declined.exit_code == 1
    assert "r1serve: error: cancelled; nothing was removed" in declined.stderr
    assert runner.invoke(app, ["rm", TINY], input="").exit_code == 1  # end of input: no
    assert Path(row["path"]).is_dir()
    removed = runner.invoke(app, ["rm", TINY], input="y\n")
    assert removed.exit_code == 0, removed.output
    assert not Path(row["path"]).exists()
    after = runner.invoke(app, ["ls"]).stdout
    assert TINY not in after and "SmolLM2-135M-Instruct" in after  # only the embedded model


def test_pull_one_gguf_and_rm_with_yes(fake_hub: FakeHub, data_dir: Path) -> None:
    name = "r1serve-test/tiny-r1-GGUF:tiny-r1-F16.gguf"
    result = runner.invoke(app, ["pull", name, "--yes"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["ls"]).stdout
    assert name in listed and "gguf" in listed and "F16" in listed
    assert runner.invoke(app, ["rm", name, "--yes"]).exit_code == 0


def test_pull_failure_is_one_line_non_zero(fake_hub: FakeHub, data_dir: Path) -> None:
    fake_hub.faults.flip_byte["model.safetensors"] = 123
    result = runner.invoke(app, ["pull", TINY, "--yes"])
    assert result.exit_code == 1
    error_lines = [
        line for line in result.stderr.splitlines() if line.startswith("r1serve: error:")
    ]
    assert len(error_lines) == 1 and "sha256 mismatch" in error_lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pull", "../../etc"], "not a hub repo id"),
        (["pull", TINY, "--mirror", "file:///etc"], "not an http(s) URL"),
        (["pull", "r1serve-test/pickled"], "--allow-pickle"),
        (["rm", "org/none", "--yes"], "no model named"),
    ],
)
def test_bad_requests_fail_cleanly(
    fake_hub: FakeHub, data_dir: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert result.stderr.startswith("r1serve: error: ") and message in result.stderr


def test_pull_asks_on_a_terminal_and_can_be_declined(
    fake_hub: FakeHub, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("r1serve.cli.pull._interactive", lambda: True)
    result = runner.invoke(app, ["pull", TINY], input="n\n")
    assert result.exit_code == 1
    assert "to download into" in result.stderr and "cancelled" in result.stderr
    assert not (data_dir / "models" / "r1serve-test--tiny-r1" / "main" / "config.json").exists()


def test_pull_a_catalog_model_by_name_and_quant_then_ls(fake_hub: FakeHub, data_dir: Path) -> None:
    result = runner.invoke(app, ["pull", "deepseek-r1-distill-qwen-1.5b:q8_0", "--yes"])
    assert result.exit_code == 0, result.output
    name = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF:DeepSeek-R1-Distill-Qwen-1.5B-Q8_0.gguf"
    assert result.stdout.strip() == name
    [row] = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert (row["name"], row["format"]) == (name, "gguf")


def test_pull_gguf_option_lists_the_quantizations_when_none_matches(
    fake_hub: FakeHub, data_dir: Path
) -> None:
    result = runner.invoke(app, ["pull", "r1serve-test/tiny-r1-GGUF", "--gguf", "Q4_K_M"])
    assert result.exit_code == 1
    assert "has no Q4_K_M GGUF (quantizations: F16, Q8_0)" in result.stderr
    ok = runner.invoke(app, ["pull", "r1serve-test/tiny-r1-GGUF", "--gguf", "q8_0", "--yes"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == "r1serve-test/tiny-r1-GGUF:quants/tiny-r1-Q8_0.gguf"


def test_ls_lists_the_embedded_model(data_dir: Path) -> None:
    listed = runner.invoke(app, ["ls"])
    assert listed.exit_code == 0, listed.output
    assert "SmolLM2-135M-Instruct" in listed.stdout and "gguf" in listed.stdout
    assert json.loads(runner.invoke(app, ["ls", "--json"]).stdout) == []  # the store only
