"""The serve and chat commands: one-line errors, in-process and remote chat."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r1serve.cli import _register, app
from support.api import LiveServer
from support.models import TINY_ANSWER, TINY_R1_HF, TINY_REASONING

runner = CliRunner()
_register()


def r1serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "r1serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("/no/such/model", "not found"),
        ("../../etc/passwd", "../../etc/passwd"),
        ("nobody/not-cached-model", "r1serve pull nobody/not-cached-model"),
    ],
)
def test_serve_bad_model_is_one_line(model: str, says: str) -> None:
    result = r1serve("serve", "--model", model, "--port", "0")
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("r1serve: error:") == 1


def test_serve_dir_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    result = r1serve("serve", "--model", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "safetensors" in result.stderr


def test_serve_bad_setting_is_one_line() -> None:
    result = r1serve("serve", "--port", "99999")
    assert result.returncode == 2
    assert "port" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "chat"):
        assert command in result.output


def test_chat_local_shows_reasoning_and_answer() -> None:
    result = runner.invoke(
        app, ["chat", "--local", "--model", str(TINY_R1_HF), "--temperature", "0", "hi"]
    )
    assert result.exit_code == 0, result.output
    assert TINY_REASONING in result.output
    assert result.output.rstrip().endswith(TINY_ANSWER)


def test_chat_remote_interactive(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(["<think>hm</think>first", "second"])
    result = runner.invoke(
        app,
        ["chat", "--url", server.url, "--no-show-reasoning"],
        input="hello\n/reset\nagain\n/exit\n",
    )
    assert result.exit_code == 0, result.output
    assert "first" in result.output and "second" in result.output
    assert "hm" not in result.output


def test_chat_remote_error_is_one_line() -> None:
    result = runner.invoke(app, ["chat", "--url", "http://127.0.0.1:9", "hi"])
    assert result.exit_code == 2
    assert "cannot reach" in result.output
