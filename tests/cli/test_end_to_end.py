"""Pull the tiny R1 model from the fake hub, list it, and hand its name to the model loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakehub import FakeHub
from r1serve.catalog.store import lookup
from r1serve.cli import _register, app
from r1serve.engine.source import resolve_model_source

_register()
runner = CliRunner()


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("r1serve-test/tiny-r1", "hf_dir"),
        ("r1serve-test/tiny-r1-GGUF:tiny-r1-F16.gguf", "gguf"),
    ],
)
def test_pull_ls_and_loader_resolve(
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
