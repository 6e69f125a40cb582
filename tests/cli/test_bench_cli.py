"""`r1serve bench`: tables that fit 100 columns, JSON file, keys, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from r1serve.cli import _register, app
from r1serve.client.bench import Bench, BenchConfig, all_failed, load_prompts
from r1serve.client.bench_report import results_tables
from r1serve.client.bench_stats import Distribution, LevelSummary
from r1serve.engine.fake import FakeReply
from support.accounts import secure_settings
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


def _keyed(live_server: Start) -> tuple[LiveServer, str]:
    server = live_server(FakeReply(chunks=["w "] * 4), secure_settings())
    users, keys = server.accounts.users, server.accounts.keys
    return server, keys.create(users.by_name("admin").id).key


SHORT = ["--concurrency", "1", "--requests", "2", "--warmup", "0", "--max-tokens", "8"]


@pytest.mark.parametrize("named_model", [False, True])
def test_a_401_says_where_the_key_comes_from(live_server: Start, named_model: bool) -> None:
    server, _ = _keyed(live_server)
    model = ["--model", "fake-model"] if named_model else []
    no_key = {"R1SERVE_API_KEY": None}
    missing = runner.invoke(app, ["bench", "--url", server.url, *SHORT, *model], env=no_key)
    assert missing.exit_code == 1 and missing.stderr.strip().count("\n") == 0
    assert "HTTP 401" in missing.stderr
    assert "needs an API key; pass --api-key or set R1SERVE_API_KEY" in missing.stderr
    wrong = runner.invoke(
        app, ["bench", "--url", server.url, *SHORT, *model, "--api-key", "r1s-wrong"], env=no_key
    )
    assert wrong.exit_code == 1
    assert "refused the API key; check --api-key or R1SERVE_API_KEY" in wrong.stderr
    assert "r1s-wrong" not in wrong.stderr


def test_the_key_from_the_environment_is_used(live_server: Start) -> None:
    server, key = _keyed(live_server)
    result = runner.invoke(
        app, ["bench", "--url", server.url, *SHORT], env={"R1SERVE_API_KEY": key}
    )
    assert result.exit_code == 0, result.stderr
    assert "fake-model" in result.stdout


def test_a_401_on_the_requests_alone_says_so_too() -> None:
    # A server whose model list is public but whose generation needs a key.
    transport = httpx.MockTransport(
        lambda request: (
            httpx.Response(401, json={"error": {"message": "API key required"}})
            if request.url.path != "/v1/models"
            else httpx.Response(200, json={"data": [{"id": "m"}]})
        )
    )
    config = BenchConfig(url="http://bench.test", concurrency=(1,), requests=1, warmup=0)
    run = asyncio.run(Bench(config, load_prompts("chat"), transport=transport).run())
    assert all_failed(run, None) == (
        "every request failed; first error: HTTP 401: API key required; "
        "the server needs an API key; pass --api-key or set R1SERVE_API_KEY"
    )


def _level(concurrency: int, scale: float) -> LevelSummary:
    big = Distribution(count=99_999, mean=123.456 * scale, p50=99.9 * scale,
                       p95=999.99 * scale, p99=9999.99 * scale)  # fmt: skip
    return LevelSummary(
        concurrency=concurrency, requests=99_999, completed=99_999, errors=99_999,
        error_messages=[], wall_s=1e5, output_tokens=10**9, output_tokens_per_s=123456.7,
        requests_per_s=9999.99, mean_output_tokens=32768, token_count_source="usage",
        finish_reasons={}, ended_before_max_tokens=0, ttft=big, ttfo=big, tpot=big, itl=None,
        latency=big, client_cpu_s=1e5, client_cpu_ms_per_request=99999.9,
        client_cpu_percent=100.0,
    )  # fmt: skip


def test_results_tables_fit_100_columns_without_wrapping() -> None:
    levels = [_level(1, 1.0), _level(256, 10.0), _level(1024, 100.0)]
    tables = results_tables(levels, "fake-model at http://127.0.0.1:8000")
    for width in (100, 300):  # 300: the tables' own width, not squeezed to fit
        console = Console(width=width, record=True, file=io.StringIO())
        for table in tables:
            console.print(table)
        text = console.export_text()
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 100, text
        assert "…" not in text, text
        # Every cell on one line: each header and the widest values appear whole.
        for header in ("out tok/s", "client ms/req", "client CPU %", "TTFT ms", "latency s"):
            assert header in text
        assert "123456.7" in text and "999999000.0" in text  # TPOT p99 at 100x, in ms
        rows = [line for line in lines if line.startswith("│")]
        assert len(rows) == 3 + 3 * 5  # throughput rows, then five latency rows a level


def test_bench_output_fits_a_100_column_terminal(live_server: Start) -> None:
    server = live_server(FakeReply(chunks=["w "] * 8))
    result = runner.invoke(app, ["bench", "--url", server.url, *SHORT], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 100, result.stdout
    assert "…" not in result.stdout and "TTFO ms" in result.stdout
