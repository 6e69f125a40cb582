"""`r1serve serve` start-up: a short summary, changed settings only, the login box last, one
access log line per request."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from r1serve.api.server import changed_settings
from r1serve.settings import Settings
from support.api import free_port
from support.models import TINY_R1_HF


def test_only_changed_settings_are_listed(monkeypatch: object) -> None:
    settings = Settings(_env_file=None, port=9000, max_waiting=3)  # type: ignore[call-arg]
    lines = changed_settings(settings, from_flags=["port"])
    assert "port = 9000 (flag)" in lines
    assert all(not line.startswith("host ") for line in lines)  # default: not shown


def test_serve_prints_a_summary_then_the_login_box_last(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "R1SERVE_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("R1SERVE_ADMIN_PASSWORD", None)
    command = [sys.executable, "-m", "r1serve", "serve", "--model", str(TINY_R1_HF),
               "--port", str(port), "--max-model-len", "256"]  # fmt: skip
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stderr=stderr, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 240
            while "└" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            time.sleep(0.5)
        finally:
            process.terminate()
            process.wait(timeout=30)
    text = log.read_text()
    lines = text.splitlines()
    assert "port = " in text and "(flag)" in text
    assert "host = " not in text and "┃ setting" not in text  # no 40-row table
    assert any(line.startswith("model tiny-r1 from ") for line in lines)
    assert any("engine: transformers" in line for line in lines)
    top = next(i for i, line in enumerate(lines) if line.startswith("┌"))
    bottom = next(i for i, line in enumerate(lines) if line.startswith("└"))
    box = "\n".join(lines[top : bottom + 1])
    assert "user:     admin" in box and "password: " in box and f":{port}" in box
    assert not any("Uvicorn running" in line for line in lines[bottom:])  # the box comes last
    requests = [line for line in lines if "/health" in line]
    assert len(requests) == 1 and "r1serve.access" in requests[0]  # one line, r1serve's
