"""`r1serve serve --models FILE` and `--serve NAME=PATH` in a real process: tiny-r1 on
transformers and on llama.cpp side by side, picked through the official openai client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from support.api import free_port
from support.models import TINY_ANSWER, TINY_R1_GGUF, TINY_R1_HF, TINY_REASONING
from support.upstreams import tiny_r1_upstream


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {**os.environ, "R1SERVE_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "r1serve", "serve", *args, "--no-auth",
               "--port", str(port), "--threads", "1", "--max-num-seqs", "1"]  # fmt: skip
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stderr=stderr, stdout=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}", log


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 240
    while True:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def test_a_models_file_serves_two_engines_picked_by_model(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text(
        f'[[model]]\nname = "tiny-hf"\npath = "{TINY_R1_HF}"\nengine = "transformers"\n'
        "max_model_len = 192\n\n"
        f'[[model]]\nname = "tiny-gguf"\npath = "{TINY_R1_GGUF}"\nengine = "llamacpp"\n'
        "max_model_len = 160\ndefault = true\n",
        encoding="utf-8",
    )
    process, url, log = _serve(tmp_path, "--models", str(file))
    try:
        _wait_ready(process, url, log)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        cards = {card.id: card.model_extra or {} for card in client.models.list()}
        assert list(cards) == ["tiny-gguf", "tiny-hf"]
        assert (cards["tiny-gguf"]["engine"], cards["tiny-gguf"]["max_model_len"]) == (
            "llamacpp",
            160,
        )
        assert (cards["tiny-hf"]["engine"], cards["tiny-hf"]["max_model_len"]) == (
            "transformers",
            192,
        )
        for name in ("tiny-hf", "tiny-gguf"):
            result = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert result.model == name and result.usage is not None
            assert result.usage.completion_tokens > 0
        with_default = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=60,
        )
        assert with_default.json()["model"] == "tiny-gguf"
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert "tiny-gguf (default)" in text and "engine: llamacpp" in text
    assert "engine: transformers" in text


def test_a_bad_models_file_stops_the_start_with_its_line(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text('[[model]]\nname = "a"\npath = "x"\nengine = "vllm"\n', encoding="utf-8")
    process, _, log = _serve(tmp_path, "--models", str(file), "--serve", "b=y")
    assert process.wait(timeout=60) == 2
    message = log.read_text()
    assert f"models file {file} line 4 (model 'a'), field 'engine': unknown engine" in message


def test_a_local_gguf_and_an_upstream_model_side_by_side(tmp_path: Path) -> None:
    """One r1serve serves tiny-r1's GGUF on llama.cpp and, as an upstream model, another
    r1serve process serving tiny-r1 on transformers; each streams its reasoning split."""
    upstream = tiny_r1_upstream().start()
    file = tmp_path / "models.toml"
    file.write_text(
        f'[[model]]\nname = "local-gguf"\npath = "{TINY_R1_GGUF}"\nengine = "llamacpp"\n'
        "max_model_len = 160\n\n"
        f'[[model]]\nname = "remote"\nengine = "upstream"\nurls = ["{upstream.url}/v1"]\n',
        encoding="utf-8",
    )
    process, url, log = _serve(tmp_path, "--models", str(file))
    try:
        _wait_ready(process, url, log)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        cards = {card.id: card.model_extra or {} for card in client.models.list()}
        assert {name: card["engine"] for name, card in cards.items()} == {
            "local-gguf": "llamacpp",
            "remote": "upstream",
        }
        for name in ("local-gguf", "remote"):
            reasoning, answer = [], []
            stream = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            for chunk in stream:
                assert chunk.model == name
                if chunk.choices:
                    extra = chunk.choices[0].delta.model_extra or {}
                    reasoning.append(extra.get("reasoning_content") or "")
                    answer.append(chunk.choices[0].delta.content or "")
            assert "".join(reasoning).strip() == TINY_REASONING, name
            assert "".join(answer).strip() == TINY_ANSWER, name
    finally:
        process.terminate()
        process.wait(timeout=30)
        upstream.stop()
