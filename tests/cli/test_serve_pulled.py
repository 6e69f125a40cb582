"""End to end: pull the tiny R1 model from the fake hub, `ls` it, serve it by name, check its reply.

Serving goes through the same calls `r1serve serve --model NAME` makes (build_engine with the
store's lookup, then create_app), in process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fakehub import FakeHub
from r1serve.api.app import create_app
from r1serve.catalog.store import lookup
from r1serve.cli import _register, app
from r1serve.engine.registry import build_engine
from r1serve.engine.source import resolve_model_source
from support.api import make_settings
from support.models import TINY_ANSWER, TINY_REASONING

_register()
runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("r1serve-test/tiny-r1", "hf_dir"),
        ("r1serve-test/tiny-r1-GGUF:tiny-r1-F16.gguf", "gguf"),
    ],
)
def test_pull_ls_resolve_and_serve(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, kind: str
) -> None:
    monkeypatch.setenv("R1SERVE_DATA_DIR", str(tmp_path))
    pulled = runner.invoke(app, ["pull", target, "--yes"])
    assert pulled.exit_code == 0, pulled.output
    name = pulled.stdout.strip()

    [row] = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert row["name"] == name == target

    def store_lookup(spec: str) -> Path | None:
        return lookup(spec, tmp_path)

    source = resolve_model_source(name, store_lookup=store_lookup)
    assert source.kind == kind
    assert source.file == Path(row["path"])

    settings = make_settings(model=name, data_dir=tmp_path)
    built = build_engine(settings, store_lookup=store_lookup)
    with TestClient(create_app(settings, built.engine)) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "temperature": 0},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == name
    message = body["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (TINY_REASONING, TINY_ANSWER)
    assert body["choices"][0]["finish_reason"] == "stop"
