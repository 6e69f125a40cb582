"""`r1serve bench`: table, JSON file, exit codes and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r1serve.cli import _register, app
from r1serve.engine.fake import FakeReply
from support.api import LiveServer

runner = CliRunner()
_register()
Start = Callable[..., LiveServer]


def test_bench_prints_a_table_and_writes_json(live_server: Start, tmp_path: Path) -> None:
    server = live_server(FakeReply(chunks=["w "] * 8, delay_s=0.005))
    out = tmp_path / "runs" / "results.json"
    result = runner.invoke(
        app,
        ["bench", "--url", server.url, "--concurrency", "1,2", "--requests", "4",
         "--max-tokens", "16", "--api-key", "sk-secret", "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fake-model" in result.stdout and "out tok/s" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["server"]["model"] == "fake-model"
    assert [level["concurrency"] for level in doc["levels"]] == [1, 2]
    assert all(level["completed"] == 4 for level in doc["levels"])
    level = doc["levels"][0]
    for metric in ("ttft", "ttfo", "tpot", "itl", "latency"):
        assert set(level[metric]) == {"count", "mean", "p50", "p95", "p99"}
    assert level["token_count_source"] == "usage"
    machine = doc["machine"]
    assert machine["cpu_model"] and machine["logical_cores"] >= 1
    assert len(machine["load_average_start"]) == 3 and len(machine["load_average_end"]) == 3
    assert machine["ram_total_bytes"] > 0
    assert doc["date"] and doc["config"]["max_tokens"] == 16 and "api_key" not in doc["config"]
    assert "sk-secret" not in out.read_text() and "***" in doc["command"]


def test_unreachable_url_is_one_line() -> None:
    result = runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9", "--requests", "1"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("r1serve: error: cannot reach http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--concurrency", "1,x"], "--concurrency takes numbers"),
        (["--prompts", "/no/such.jsonl"], "cannot read prompts"),
        (["--requests", "4", "--duration", "2"], "either a number of requests or a duration"),
        (["--endpoint", "embeddings"], "--endpoint must be chat or completions"),
        (["--extra-body", "[1]"], "--extra-body must be a JSON object"),
    ],
)
def test_bad_options_exit_2(args: list[str], says: str) -> None:
    result = runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2
    assert says in result.stderr and "Traceback" not in result.stderr


def test_every_request_failing_exits_1_after_writing_json(
    live_server: Start, tmp_path: Path
) -> None:
    server = live_server()
    out = tmp_path / "results.json"
    result = runner.invoke(
        app,
        ["bench", "--url", server.url, "--model", "nope", "--concurrency", "2",
         "--requests", "3", "--warmup", "0", "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "every request failed; first error: HTTP 404" in result.stderr
    assert json.loads(out.read_text())["levels"][0]["errors"] == 3
