"""Pure parts of the benchmark: percentiles, per-request metrics, summaries, answer detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1serve.client.bench import answer_started, load_prompts, parse_concurrency
from r1serve.client.bench_stats import RequestRecord, distribution, percentile, summarize
from r1serve.errors import ConfigError


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_distribution_of_nothing_is_none() -> None:
    assert distribution([]) is None
    dist = distribution([0.1, 0.3])
    assert dist is not None and dist.mean == pytest.approx(0.2) and dist.count == 2


def test_tpot_uses_usage_tokens_and_falls_back_to_chunks() -> None:
    record = RequestRecord(ok=True, ttft=0.5, latency=2.5, chunks=5, usage_tokens=11)
    assert record.output_tokens == 11
    assert record.tpot == pytest.approx(0.2)  # (2.5 - 0.5) / (11 - 1)
    record.usage_tokens = None
    assert record.output_tokens == 5 and record.tpot == pytest.approx(0.5)
    assert RequestRecord(ok=True, ttft=0.1, latency=0.1, chunks=1).tpot is None


def test_summary_counts_throughput_and_errors_apart() -> None:
    records = [
        RequestRecord(ok=True, ttft=0.1, latency=1.1, itl=[0.1] * 9, chunks=10, usage_tokens=10),
        RequestRecord(ok=True, ttft=0.3, latency=1.3, itl=[0.2] * 4, chunks=5, usage_tokens=5),
        RequestRecord(error="HTTP 503: busy"),
        RequestRecord(error="HTTP 503: busy"),
    ]
    records[0].finish_reason, records[1].finish_reason = "length", "stop"
    level = summarize(4, records, wall_s=2.0, client_cpu_s=0.02, max_tokens=10)
    assert (level.requests, level.completed, level.errors) == (4, 2, 2)
    assert level.error_messages == ["HTTP 503: busy"]
    assert level.output_tokens == 15 and level.output_tokens_per_s == pytest.approx(7.5)
    assert level.requests_per_s == pytest.approx(1.0)
    assert level.token_count_source == "usage"
    assert level.finish_reasons == {"length": 1, "stop": 1}
    assert level.ended_before_max_tokens == 1
    assert level.ttft is not None and level.ttft.mean == pytest.approx(0.2)
    assert level.itl is not None and level.itl.count == 13
    assert level.client_cpu_ms_per_request == pytest.approx(5.0)
    assert level.client_cpu_percent == pytest.approx(1.0)


def test_summary_says_when_tokens_were_counted_as_chunks() -> None:
    records = [
        RequestRecord(ok=True, ttft=0.1, latency=1.0, chunks=4),
        RequestRecord(ok=True, ttft=0.1, latency=1.0, chunks=4, usage_tokens=8),
    ]
    assert summarize(1, records[:1], wall_s=1, client_cpu_s=0, max_tokens=4).token_count_source == (
        "chunks"
    )
    assert summarize(1, records, wall_s=1, client_cpu_s=0, max_tokens=4).token_count_source == (
        "mixed"
    )


@pytest.mark.parametrize(
    ("content", "started"),
    [
        ("", False),
        ("  \n", False),
        ("Hello", True),
        ("<thi", False),  # may become <think>
        ("<think>\nhmm", False),
        ("<think>\nhmm\n</think>\n\n", False),
        ("<think>\nhmm\n</think>\n\nYes", True),
        ("<b>bold</b>", True),
    ],
)
def test_answer_starts_after_raw_reasoning(content: str, started: bool) -> None:
    assert answer_started(content) is started


def test_shipped_prompt_sets_load() -> None:
    for name in ("chat", "reasoning"):
        prompts = load_prompts(name)
        assert len(prompts) >= 8
        assert all(p.text and p.messages[-1]["role"] == "user" for p in prompts)


def test_prompt_file_lines_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "raw text"}\n\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    prompts = load_prompts(str(good))
    assert [p.text for p in prompts] == ["raw text", "hi"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"messages": "nope"}\n')
    with pytest.raises(ConfigError, match="line 2"):
        load_prompts(str(bad))
    with pytest.raises(ConfigError, match="cannot read prompts"):
        load_prompts(str(tmp_path / "missing.jsonl"))


def test_concurrency_list_is_parsed() -> None:
    assert parse_concurrency("1, 4,16") == (1, 4, 16)
    for bad in ("", "a,b", "0,4", "-1"):
        with pytest.raises(ConfigError):
            parse_concurrency(bad)
